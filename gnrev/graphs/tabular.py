"""Per-event (tabular) return classifiers: logistic regression and an MLP.

A tabular model sees one event at a time: the features of its customer, its variant and the
event itself, concatenated (:func:`tabular_features`), without the rest of the graph.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnrev.data.graph_returns import GraphReturns


def tabular_features(data: GraphReturns, events: Optional[np.ndarray] = None) -> np.ndarray:
  """``[customer features, variant features, event features]`` of each event, ``(n, d)``.

  Args:
    data: the purchase graph.
    events: event indices, or ``None`` for all events.

  Returns:
    A float32 ``(len(events), customer_dim + variant_dim + event_dim)`` numpy array.
  """
  events = np.arange(data.num_events) if events is None else np.asarray(events)
  return np.concatenate([data.customer_features[data.customer[events]],
                         data.variant_features[data.variant[events]],
                         data.event_features[events]], axis=1).astype(np.float32)


class MLPClassifier(nn.Module):
  """ReLU MLP from per-example inputs to one binary logit each.

  With no hidden layers it is logistic regression (:func:`logistic_regression`). It is also the
  edge head of :class:`gnrev.graphs.BipartiteGNN`.

  Attributes:
    hidden_sizes: widths of the hidden layers.
    param_dtype: dtype of the parameters.

  Example:
    >>> from gnrev.data import graph_returns
    >>> data = graph_returns.synthetic_graph_returns(0, num_customers=20, num_variants=10)
    >>> split = graph_returns.split_events(data.num_events, seed=0)
    >>> x = tabular_features(data, split.train)
    >>> model = MLPClassifier(hidden_sizes=(8,))
    >>> params = model.init(jax.random.key(0), x)
    >>> model.apply(params, x).shape == (len(split.train),)
    True
  """
  hidden_sizes: Sequence[int] = (64,)
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``(n, d)`` inputs -> ``(n,)`` logits."""
    if x.ndim != 2:
      raise ValueError(f"MLPClassifier expects inputs of shape (n, d), got {x.shape}.")
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width, param_dtype=self.param_dtype)(x))
    return nn.Dense(1, param_dtype=self.param_dtype)(x)[:, 0]


def logistic_regression(param_dtype: Any = jnp.float32) -> MLPClassifier:
  """Logistic regression: the logit is an affine function of the inputs."""
  return MLPClassifier(hidden_sizes=(), param_dtype=param_dtype)
