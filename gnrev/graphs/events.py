"""Return models as two-class softmax classifiers of event rows, for ``gnrev.train``'s launcher.

The launcher trains ``(x, y_onehot)`` classifiers whose variables are ``{"params": p, **fixed}``,
``fixed`` being every non-trained collection, replicated over the devices and passed to the
jitted step as an argument. Here an example is one purchase event, a row of
:func:`event_inputs` ``[customer index, variant index, event features...]``, and the message
graph (node features and unlabelled message edges, :class:`~gnrev.graphs.MessageGraph`) is the
non-trained collection :data:`GRAPH` (:func:`graph_variables`), so it rides in ``fixed`` and is
never a constant closed over by the step. The encoding itself (:func:`event_inputs`,
:func:`graph_variables`) lives with the data in :mod:`gnrev.data.graph_returns`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnrev.data.graph_returns import GRAPH, MESSAGE_GRAPH_FIELDS, event_inputs, graph_variables
from gnrev.graphs.gnn import BipartiteGNN, MessageGraph
from gnrev.graphs.tabular import MLPClassifier, logistic_regression


def two_class_logits(logit: jax.Array) -> jax.Array:
  """``(n,)`` binary logits ``l`` -> ``(n, 2)`` softmax logits ``[0, l]``.

  ``softmax([0, l]) = [1 - sigmoid(l), sigmoid(l)]``, so softmax cross-entropy on one-hot labels
  is the binary cross-entropy of ``l``, and the categorical Fisher ``J^T (diag p - p p^T) J``
  (the first logit is constant, its Jacobian row zero) is the Bernoulli one,
  ``sigmoid(l) (1 - sigmoid(l)) J_l^T J_l``. Optimizers built for softmax classifiers thus train
  a binary model with its own likelihood; class 1 (positive) is "returned".
  """
  return jnp.stack([jnp.zeros_like(logit), logit], axis=-1)


class TwoClassLogits(nn.Module):
  """A binary edge model as a two-class classifier (:func:`two_class_logits` of its logit).

  Attributes:
    edge_model: maps ``*inputs`` to ``(n,)`` logits (a ``BipartiteGNN`` or ``MLPClassifier``).
  """
  edge_model: nn.Module

  @nn.compact
  def __call__(self, inputs: tuple) -> jax.Array:
    """``inputs``: the edge model's arguments as a tuple; returns ``(n, 2)`` logits."""
    return two_class_logits(self.edge_model(*inputs))


class EventClassifier(nn.Module):
  """Two-class logits of event rows (:func:`event_inputs`) from a binary edge model.

  Reads the message graph from the :data:`GRAPH` collection. A :class:`BipartiteGNN` gets the
  graph and the events' endpoints and features; any other edge model (an
  :class:`MLPClassifier`) gets the per-event row ``[customer features, variant features, event
  features]`` of :func:`gnrev.graphs.tabular_features`.

  Attributes:
    edge_model: the binary model, ``BipartiteGNN`` or ``MLPClassifier``.
    num_classes: must be 2 (the launcher passes its dataset's class count).

  Example::

    model = EventClassifier(BipartiteGNN(hidden_size=16))
    variables = {**graph_variables(data), "params": params}
    logits = model.apply(variables, event_inputs(data, split.test))   # (n, 2)
  """
  edge_model: nn.Module
  num_classes: int = 2

  def __post_init__(self):
    if self.num_classes != 2:
      raise ValueError(f"EventClassifier predicts 2 classes (kept, returned); the dataset has "
                       f"num_classes={self.num_classes}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x``: ``(n, 2 + event_dim)`` event rows; returns ``(n, 2)`` logits."""
    if not self.has_variable(GRAPH, "customer"):
      raise ValueError(f"EventClassifier needs the message graph as the {GRAPH!r} variable "
                       "collection (graph_variables); the dataset gave none.")
    graph = MessageGraph(**{k: self.get_variable(GRAPH, k) for k in MESSAGE_GRAPH_FIELDS})
    customer, variant = x[:, 0].astype(jnp.int32), x[:, 1].astype(jnp.int32)
    features = x[:, 2:]
    if isinstance(self.edge_model, BipartiteGNN):
      logit = self.edge_model(graph, customer, variant, features)
    else:
      logit = self.edge_model(jnp.concatenate(
          [graph.customer_features[customer], graph.variant_features[variant], features], 1))
    return two_class_logits(logit)


def gnn_classifier(num_classes: int = 2, hidden_size: int = 32, num_rounds: int = 2,
                   edge_hidden_sizes: Sequence[int] = (64,)) -> EventClassifier:
  """:class:`EventClassifier` of a :class:`BipartiteGNN` (launcher model ``gnn``)."""
  return EventClassifier(BipartiteGNN(hidden_size, num_rounds, tuple(edge_hidden_sizes)),
                         num_classes)


def mlp_classifier(num_classes: int = 2,
                   hidden_sizes: Sequence[int] = (64, 64)) -> EventClassifier:
  """:class:`EventClassifier` of a per-event :class:`MLPClassifier` (launcher ``edge_mlp``)."""
  return EventClassifier(MLPClassifier(tuple(hidden_sizes)), num_classes)


def logreg_classifier(num_classes: int = 2) -> EventClassifier:
  """:class:`EventClassifier` of per-event logistic regression (launcher model ``logreg``)."""
  return EventClassifier(logistic_regression(), num_classes)
