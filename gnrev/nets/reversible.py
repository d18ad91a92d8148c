"""Stacks of coupling blocks, with three ways to get their gradient.

``memory_mode`` selects how reverse-mode differentiation gets the block inputs it needs:

* ``"autodiff"``: plain autodiff; every block keeps its activations (``O(L n M)`` memory).
  The only mode that supports forward-mode (``jax.jvp``), so Gauss-Newton and NTK code use it.
* ``"remat"``: ``jax.checkpoint`` per block; activations are recomputed from stored block inputs.
* ``"invert"``: a ``jax.custom_vjp`` that stores only the stack's output and recomputes each
  block's input by inverting the block during the backward pass (RevNet, Gomez et al. 2017), so
  the memory held across depth does not grow with the number of blocks.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax

from gnrev.nets.coupling import coupling_block, coupling_inverse

MEMORY_MODES = ("invert", "autodiff", "remat")


def check_memory_mode(memory_mode: str) -> None:
  if memory_mode not in MEMORY_MODES:
    raise ValueError(
        f"Unknown memory_mode {memory_mode!r}; allowed: {', '.join(MEMORY_MODES)}.")


def stack_forward(blocks_params: Sequence, blocks_fixed: Sequence, x1: jax.Array, x2: jax.Array,
                  activations: Sequence[str]) -> tuple[jax.Array, jax.Array]:
  """Runs the blocks in order with plain autodiff (jvp- and vjp-compatible)."""
  for params, fixed, activation in zip(blocks_params, blocks_fixed, activations):
    x1, x2 = coupling_block(params, fixed, x1, x2, activation)
  return x1, x2


def stack_inverse(blocks_params: Sequence, blocks_fixed: Sequence, y1: jax.Array, y2: jax.Array,
                  activations: Sequence[str]) -> tuple[jax.Array, jax.Array]:
  """Exact inverse of :func:`stack_forward`: inverts the blocks from the last to the first."""
  for params, fixed, activation in reversed(list(zip(blocks_params, blocks_fixed, activations))):
    y1, y2 = coupling_inverse(params, fixed, y1, y2, activation)
  return y1, y2


_remat_block = jax.checkpoint(coupling_block, static_argnums=(4,))


def _stack_forward_remat(blocks_params, blocks_fixed, x1, x2, activations):
  for params, fixed, activation in zip(blocks_params, blocks_fixed, activations):
    x1, x2 = _remat_block(params, fixed, x1, x2, activation)
  return x1, x2


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _stack_forward_invert(blocks_params, blocks_fixed, x1, x2, activations):
  return stack_forward(blocks_params, blocks_fixed, x1, x2, activations)


def _invert_fwd(blocks_params, blocks_fixed, x1, x2, activations):
  y1, y2 = stack_forward(blocks_params, blocks_fixed, x1, x2, activations)
  # Only the output is kept: each block's input is rebuilt from its output in the backward pass.
  return (y1, y2), (blocks_params, blocks_fixed, y1, y2)


def _invert_bwd(activations, residuals, cotangents):
  blocks_params, blocks_fixed, y1, y2 = residuals
  dy1, dy2 = cotangents
  d_params, d_fixed = [], []
  for params, fixed, activation in reversed(list(zip(blocks_params, blocks_fixed, activations))):
    x1, x2 = coupling_inverse(params, fixed, y1, y2, activation)
    _, block_vjp = jax.vjp(functools.partial(coupling_block, activation=activation),
                           params, fixed, x1, x2)
    dp, df, dy1, dy2 = block_vjp((dy1, dy2))
    d_params.append(dp)
    d_fixed.append(df)
    y1, y2 = x1, x2
  return type(blocks_params)(reversed(d_params)), type(blocks_fixed)(reversed(d_fixed)), dy1, dy2


_stack_forward_invert.defvjp(_invert_fwd, _invert_bwd)


def reversible_stack(blocks_params: Sequence, blocks_fixed: Sequence, x1: jax.Array,
                     x2: jax.Array, activations: Sequence[str],
                     memory_mode: str = "autodiff") -> tuple[jax.Array, jax.Array]:
  """Runs coupling blocks in order; ``memory_mode`` picks how their gradient is computed.

  Args:
    blocks_params: one ``{"F": {W, b}, "G": {W, b}}`` per block, as a tuple.
    blocks_fixed: one ``{"F": {C}, "G": {C}}`` (or ``{}`` without expansion) per block, as a tuple.
    x1, x2: the two halves of the input, ``(..., h1)`` and ``(..., h2)``.
    activations: one activation name per block (static).
    memory_mode: ``"autodiff"``, ``"remat"`` or ``"invert"`` (see the module docstring).

  Returns:
    The two halves of the last block's output.
  """
  check_memory_mode(memory_mode)
  blocks_params, blocks_fixed, activations = tuple(blocks_params), tuple(blocks_fixed), tuple(
      activations)
  if not len(blocks_params) == len(blocks_fixed) == len(activations):
    raise ValueError(
        f"Got {len(blocks_params)} block params, {len(blocks_fixed)} block fixed variables and "
        f"{len(activations)} activations; they must be one per block.")
  if memory_mode == "invert":
    return _stack_forward_invert(blocks_params, blocks_fixed, x1, x2, activations)
  if memory_mode == "remat":
    return _stack_forward_remat(blocks_params, blocks_fixed, x1, x2, activations)
  return stack_forward(blocks_params, blocks_fixed, x1, x2, activations)
