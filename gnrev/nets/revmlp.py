"""RevMLP: the reversible MLP of Buffelli et al. (NeurIPS 2024), as a flax linen module."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gnrev.nets import coupling
from gnrev.nets.reversible import check_memory_mode, reversible_stack, stack_inverse


def split_sizes(features: int) -> tuple[int, int]:
  """Sizes ``(h1, h2)`` of the two halves of a ``features``-dim input.

  An odd input size puts the extra feature in the first half: ``h1 = ceil(d/2)``,
  ``h2 = floor(d/2)``. The coupling stays exactly invertible because F maps the second half
  to the first (``h2 -> h1``) and G the first to the second (``h1 -> h2``).
  """
  return (features + 1) // 2, features // 2


def flatten_inputs(x: jax.Array) -> jax.Array:
  """Inputs as the ``(n, d)`` feature matrix a RevMLP splits into halves.

  Images ``(n, H, W, C)`` (flax's NHWC) are flattened channel-major, in ``(C, H, W)`` order as
  the paper's PyTorch tensors are, so that the halves ``[x1 | x2]`` of a CIFAR-10 image are the
  paper's (the red plane and the top half of the green one first). With one channel (MNIST) this
  is the plain row-major flatten. Any other input ``(n, ...)`` is flattened row-major.
  """
  x = jnp.asarray(x)
  if x.ndim == 4:
    x = jnp.moveaxis(x, -1, 1)
  return x.reshape(x.shape[0], -1)


def _orthonormal_columns(key, rows: int, cols: int, dtype) -> jax.Array:
  """A ``rows x cols`` matrix with orthonormal columns (QR of a Gaussian, signs fixed)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (rows, cols), dtype))
  return q * jnp.where(jnp.diagonal(r) < 0, -1, 1).astype(dtype)


class RevMLP(nn.Module):
  """Reversible coupling MLP with fixed random expansions and a fixed orthonormal head.

  The input is flattened (:func:`flatten_inputs`: channel-major for NHWC images) and split into
  halves ``[x1 | x2]``; ``num_blocks`` additive coupling blocks (``gnrev.nets.coupling``) map it to a ``d``-dim hidden state ``h``; the logits are
  ``h U`` with a fixed ``U`` (``d x num_classes``) with orthonormal columns. Only the branch
  contractions ``W, b`` are trained (collection ``params``); the expansions ``C`` and the head
  ``U`` live in collection ``fixed``, so an optimizer over ``params`` never touches them.

  Attributes:
    num_blocks: number of coupling blocks ``L`` (paper: 2 for MNIST, 6 for CIFAR-10).
    expansion: width ``M`` of the fixed random expansion (paper: 8000), or ``None`` for the
      no-bottleneck variant (``F(u) = phi(u) W^T + b`` with ``W`` square-ish, paper Fig. 5).
    num_classes: number of logits ``c``; must not exceed the input size ``d``.
    linear_first_block: use the identity instead of ReLU in the first block (the paper's choice).
    init_std: standard deviation of the trained ``W`` at init (biases start at zero).
    memory_mode: ``"invert"`` (recompute block inputs by inversion in the backward pass),
      ``"autodiff"`` (plain autodiff; required for ``jax.jvp``) or ``"remat"``. Inversion is
      only as accurate as the blocks are well conditioned: at depth 16 in float32 the
      reconstruction error is 2e-8 (relative) with ``init_std=1e-3`` but O(100) with
      ``init_std=0.3`` and ``expansion=256``, where the forward map amplifies by orders of
      magnitude; use ``"remat"`` or float64 for such weights.
    param_dtype: dtype of every variable.

  Inputs carry a leading batch axis ``(n, ...)``; a 1-D input is treated as one example.

  Example:
    >>> x = jax.random.normal(jax.random.key(1), (4, 16))
    >>> model = RevMLP(num_blocks=2, expansion=64, num_classes=10)
    >>> variables = model.init(jax.random.key(0), x)
    >>> sorted(variables), model.apply(variables, x).shape
    (['fixed', 'params'], (4, 10))
    >>> h = model.apply(variables, x, method=model.hidden)
    >>> x_back = model.apply(variables, h, method=model.inverse)
    >>> bool(jnp.allclose(x_back, x, atol=1e-5))
    True
  """

  num_blocks: int
  expansion: Optional[int]
  num_classes: int
  linear_first_block: bool = True
  init_std: float = 1e-3
  memory_mode: str = "invert"
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
      raise ValueError(f"num_blocks must be a positive int, got {self.num_blocks!r}.")
    if self.expansion is not None and (not isinstance(self.expansion, int) or
                                       self.expansion < 1):
      raise ValueError(f"expansion must be a positive int or None, got {self.expansion!r}.")
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}.")
    if not self.init_std >= 0:
      raise ValueError(f"init_std must be >= 0, got {self.init_std!r}.")
    check_memory_mode(self.memory_mode)
    super().__post_init__()

  @property
  def activations(self) -> tuple[str, ...]:
    """The branch nonlinearity of each block, first to last."""
    return tuple("identity" if (block == 0 and self.linear_first_block) else "relu"
                 for block in range(self.num_blocks))

  def _branch_init(self, in_features: int, out_features: int):
    width = in_features if self.expansion is None else self.expansion

    def init_params(key):
      return {"W": self.init_std * jax.random.normal(key, (out_features, width), self.param_dtype),
              "b": jnp.zeros((out_features,), self.param_dtype)}

    def init_fixed():
      if self.expansion is None:
        return {}
      key = self.make_rng("params")
      scale = 1.0 / jnp.sqrt(jnp.asarray(self.expansion, self.param_dtype))
      return {"C": scale * jax.random.normal(key, (in_features, self.expansion), self.param_dtype)}

    return init_params, init_fixed

  @nn.compact
  def stack_variables(self, features: int) -> tuple[tuple, tuple, jax.Array]:
    """The variables as the pure functions of ``gnrev.nets`` take them.

    Returns:
      ``(blocks_params, blocks_fixed, U)``: per-block trained and fixed pytrees (tuples in block
      order) and the head.
    """
    if features < 2 or features < self.num_classes:
      raise ValueError(
          f"RevMLP needs at least 2 input features and at least num_classes={self.num_classes} "
          f"of them (the head has orthonormal columns); got {features}.")
    # The head is declared first so that a wrong input size is reported in terms of features.
    head = self.variable(
        "fixed", "head",
        lambda: {"U": _orthonormal_columns(self.make_rng("params"), features, self.num_classes,
                                           self.param_dtype)}).value
    stored = head["U"].shape[0]
    if stored != features:
      raise ValueError(
          f"This RevMLP was initialised for inputs with {stored} features but got {features}.")
    h1, h2 = split_sizes(features)
    blocks_params, blocks_fixed = [], []
    for block in range(self.num_blocks):
      f_params, f_fixed = self._branch_init(h2, h1)
      g_params, g_fixed = self._branch_init(h1, h2)
      params = self.param(f"block_{block}", lambda key: {
          "F": f_params(jax.random.fold_in(key, 0)),
          "G": g_params(jax.random.fold_in(key, 1))})
      blocks_params.append(params)
      if self.expansion is None:
        blocks_fixed.append({"F": {}, "G": {}})
      else:
        fixed = self.variable("fixed", f"block_{block}",
                              lambda: {"F": f_fixed(), "G": g_fixed()}).value
        blocks_fixed.append(fixed)
    return tuple(blocks_params), tuple(blocks_fixed), head["U"]

  def _halves(self, x: jax.Array):
    flat = flatten_inputs(x) if x.ndim >= 2 else x
    if flat.shape[-1] == 0:
      raise ValueError(f"RevMLP got an input with no features, shape {x.shape}.")
    h1, _ = split_sizes(flat.shape[-1])
    return flat[..., :h1], flat[..., h1:]

  def _hidden_and_head(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x1, x2 = self._halves(x)
    blocks_params, blocks_fixed, head = self.stack_variables(x1.shape[-1] + x2.shape[-1])
    y1, y2 = reversible_stack(blocks_params, blocks_fixed, x1, x2, self.activations,
                              self.memory_mode)
    return jnp.concatenate([y1, y2], axis=-1), head

  def hidden(self, x: jax.Array) -> jax.Array:
    """The ``d``-dim output ``h`` of the last block (before the fixed head)."""
    return self._hidden_and_head(x)[0]

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``hidden(x) @ U``."""
    hidden, head = self._hidden_and_head(x)
    return hidden @ head

  def inverse(self, h: jax.Array) -> jax.Array:
    """Maps a hidden state ``h`` (``(..., d)``) back to the flattened input that produced it.

    Flattened as :func:`flatten_inputs` does (channel-major for ``(n, H, W, C)`` images).
    """
    blocks_params, blocks_fixed, _ = self.stack_variables(h.shape[-1])
    h1, _ = split_sizes(h.shape[-1])
    x1, x2 = stack_inverse(blocks_params, blocks_fixed, h[..., :h1], h[..., h1:],
                           self.activations)
    return jnp.concatenate([x1, x2], axis=-1)
