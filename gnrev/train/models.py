"""Models by name (:data:`MODELS`): RevMLP and the baselines of :mod:`gnrev.nets`, and the return
models of :mod:`gnrev.graphs`. Each maps a batch ``(n, ...)`` to
``(n, width)`` outputs, the width set by the task; ``config.model`` minus ``name`` gives its
attributes."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnrev import graphs, nets


MODELS: dict[str, Callable[..., nn.Module]] = {
    "revmlp": nets.RevMLP, "mlp": nets.MLP, "cnn": nets.CNN, "autoencoder": nets.Autoencoder,
    "gnn": graphs.gnn_classifier, "edge_mlp": graphs.mlp_classifier,
    "logreg": graphs.logreg_classifier}


def build_model(model_config: Any, num_classes: int) -> nn.Module:
  """The module named by ``model_config.name``, with the other fields as its attributes.

  ``num_classes`` is the output width (``num_outputs`` of a module that has that field). Raises
  ValueError for an unknown name, TypeError for fields the module does not take."""
  fields = dict(model_config)
  name = fields.pop("name")
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}.")
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  width = ("num_outputs" if "num_outputs" in inspect.signature(MODELS[name]).parameters
           else "num_classes")
  try:
    return MODELS[name](**{width: num_classes}, **fields)
  except TypeError as e:
    raise TypeError(f"Bad fields {sorted(fields)} for model {name!r}: {e}") from e


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with one-hot (or probability) targets."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))
