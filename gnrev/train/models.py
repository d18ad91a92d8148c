"""Models by name: the reversible RevMLP, two ordinary baselines (an MLP and a small CNN), a deep
autoencoder and the return models of :mod:`gnrev.graphs` (``gnn``, ``edge_mlp``, ``logreg``).

The baselines let GN and FishLeg be compared on non-reversible models. The return models
classify purchase events of the ``graph_returns`` dataset and read its message graph from the
non-trained ``graph`` collection (:class:`gnrev.graphs.EventClassifier`). Every model maps a batch
``(n, ...)`` to outputs ``(n, num_outputs)``: logits of the classes (its ``num_classes``), or of
the pixels for the autoencoder (its ``num_outputs``); the task (:mod:`gnrev.train.tasks`) says
how many. Its config fields (``config.model`` minus ``name``) are the module's attributes.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnrev import graphs, nets


class MLP(nn.Module):
  """A ReLU multilayer perceptron on the flattened input.

  Attributes:
    num_classes: number of logits.
    hidden: widths of the hidden layers.
  """
  num_classes: int
  hidden: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """A small ReLU convnet: 3-wide convolutions with 2x pooling, then a dense head.

  Works on images ``(n, H, W, C)`` and sequences ``(n, length, C)`` alike (the kernel has one
  axis per spatial axis of the input).

  Attributes:
    num_classes: number of logits.
    features: channels of each convolution.
  """
  num_classes: int
  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spatial = x.ndim - 2
    if spatial < 1:
      raise ValueError(
          f"CNN needs inputs with spatial axes, (n, length, C) or (n, H, W, C); got {x.shape}.")
    for channels in self.features:
      x = nn.relu(nn.Conv(channels, (3,) * spatial)(x))
      x = nn.max_pool(x, (2,) * spatial, (2,) * spatial, padding="SAME")
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class Autoencoder(nn.Module):
  """ReLU encoder, linear code, ReLU decoder, linear output (the deep-autoencoder shape).

  The decoder mirrors the encoder's widths. The input is flattened; the output has
  ``num_outputs`` values per example (pixel logits or means; the reconstruction task sets it to
  the number of input values).

  Attributes:
    num_outputs: output width (the flattened input size for reconstruction).
    encoder_widths: widths of the encoder's ReLU layers (the decoder's, reversed).
    code_size: width of the linear code.
    param_init: ``"flax"`` (flax's ``Dense`` default: LeCun-normal kernels, zero biases) or
      ``"pytorch"`` (PyTorch's ``nn.Linear`` default: kernel and bias entries
      ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, kernels ``sqrt(3)`` times smaller in std).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = Autoencoder(num_outputs=64, encoder_widths=(16, 8), code_size=4)
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> model.apply(model.init(jax.random.key(0), x), x).shape
    (2, 64)
  """
  num_outputs: int
  encoder_widths: Sequence[int] = (128, 64)
  code_size: int = 30
  param_init: str = "flax"

  def _dense(self, width: int, fan_in: int) -> nn.Dense:
    if self.param_init == "flax":
      return nn.Dense(width)
    if self.param_init == "pytorch":
      bound = 1.0 / fan_in**0.5
      uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
          key, shape, dtype, -bound, bound)
      return nn.Dense(width, kernel_init=uniform, bias_init=uniform)
    raise ValueError(f"Autoencoder: unknown param_init {self.param_init!r}; allowed: "
                     f"{', '.join(AUTOENCODER_INITS)}.")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for width in self.encoder_widths:
      x = nn.relu(self._dense(width, x.shape[-1])(x))
    x = self._dense(self.code_size, x.shape[-1])(x)
    for width in reversed(self.encoder_widths):
      x = nn.relu(self._dense(width, x.shape[-1])(x))
    return self._dense(self.num_outputs, x.shape[-1])(x)


AUTOENCODER_INITS = ("flax", "pytorch")


MODELS: dict[str, Callable[..., nn.Module]] = {
    "revmlp": nets.RevMLP,
    "mlp": MLP,
    "cnn": CNN,
    "autoencoder": Autoencoder,
    "gnn": graphs.gnn_classifier,
    "edge_mlp": graphs.mlp_classifier,
    "logreg": graphs.logreg_classifier,
}


def build_model(model_config: Any, num_classes: int) -> nn.Module:
  """The module named by ``model_config.name``, with the other fields as its attributes.

  ``num_classes`` is the output width the task asks for; a module whose width attribute is
  ``num_outputs`` (the autoencoder) gets it under that name.
  """
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
