"""Non-reversible baselines: a ReLU MLP, a small CNN and a deep autoencoder (flax linen), so
that GN and FishLeg can be compared on ordinary models."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

AUTOENCODER_INITS = ("flax", "pytorch")  # Autoencoder's param_init


class MLP(nn.Module):
  """A ReLU multilayer perceptron on the flattened input; ``hidden``: hidden-layer widths."""
  num_classes: int
  hidden: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """A small ReLU convnet: per ``features`` entry, a 3-wide convolution and 2x pooling; then a
  dense head. Takes images ``(n, H, W, C)`` or sequences ``(n, length, C)``."""
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
  """Deep autoencoder on the flattened input: ReLU encoder, linear code, mirrored ReLU decoder.

  ``param_init``: ``"flax"`` (LeCun-normal kernels, zero biases) or ``"pytorch"`` (kernels and
  biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as ``torch.nn.Linear``).

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
