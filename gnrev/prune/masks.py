"""Pruning masks: which weights may be pruned, mask selection by score, schedules, optax hook.

Masks are params-shaped boolean trees (``True`` = the weight survives). Only the kernels of
``Dense`` and ``Conv`` layers (leaves named ``kernel`` with >= 2 axes) are ever pruned; biases and
all other leaves keep all-``True`` masks. Sparsity always means the fraction of zeros among the
prunable weights.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
RANKINGS = ("global", "layer")


def _leaf_name(path) -> str:
  entry = path[-1] if path else None
  for attribute in ("key", "name", "idx"):
    if hasattr(entry, attribute):
      return str(getattr(entry, attribute))
  return str(entry)


def prunable(params: PyTree) -> PyTree:
  """Params-shaped tree of Python bools: ``True`` for Dense/Conv kernels (``kernel``, ndim >= 2)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: _leaf_name(path) == "kernel" and p.ndim >= 2, params)


def dense_masks(params: PyTree) -> PyTree:
  """All-``True`` masks (nothing pruned yet)."""
  return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
  """Sets pruned weights exactly to zero."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def sparsity(masks: PyTree) -> jax.Array:
  """Fraction of pruned weights among the prunable ones (Dense/Conv kernels)."""
  eligible = [m for m, e in zip(jax.tree.leaves(masks), jax.tree.leaves(prunable(masks))) if e]
  if not eligible:
    raise ValueError("No prunable weights: pruning acts on leaves named 'kernel' with >= 2 axes.")
  pruned = sum(jnp.sum(~m) for m in eligible)
  return pruned / sum(m.size for m in eligible)


def _check_sparsity(value) -> None:
  if isinstance(value, (int, float)) and not 0.0 <= value < 1.0:
    raise ValueError(f"sparsity must be in [0, 1), got {value}.")


def select_masks(scores: PyTree, masks: PyTree, target_sparsity, ranking: str = "global") -> PyTree:
  """Masks keeping all but the lowest-scoring weights, at exactly the target sparsity.

  Already pruned weights stay pruned (they rank first); the number pruned is
  ``round(target_sparsity * n)`` over all prunable weights (``ranking="global"``) or in every
  layer separately (``ranking="layer"``). ``target_sparsity`` may be traced (no recompilation).

  Args:
    scores: params-shaped saliencies (higher = more important).
    masks: current masks; their pruned entries stay pruned.
    target_sparsity: fraction in ``[0, 1)``; below the current sparsity nothing changes.
    ranking: ``"global"`` or ``"layer"``.

  Returns:
    New masks (non-prunable leaves unchanged).
  """
  if ranking not in RANKINGS:
    raise ValueError(f"Unknown ranking {ranking!r}; allowed: {RANKINGS}.")
  _check_sparsity(target_sparsity)
  leaves, treedef = jax.tree.flatten(scores)
  mask_leaves = treedef.flatten_up_to(masks)
  eligible = treedef.flatten_up_to(prunable(scores))
  ranked = [jnp.where(m, s, -jnp.inf).reshape(-1)
            for s, m, e in zip(leaves, mask_leaves, eligible) if e]
  groups = [jnp.concatenate(ranked)] if ranking == "global" else ranked
  kept = []
  for group in groups:
    num_pruned = jnp.round(target_sparsity * group.size).astype(jnp.int32)
    position = jnp.zeros(group.size, jnp.int32).at[jnp.argsort(group)].set(
        jnp.arange(group.size, dtype=jnp.int32))
    kept.append(position >= num_pruned)
  if ranking == "global":
    kept = jnp.split(kept[0], list(itertools.accumulate(r.size for r in ranked))[:-1])
  kept = iter(kept)
  # `& m`: a target below the current sparsity never revives pruned weights.
  new_leaves = [next(kept).reshape(m.shape) & m if e else m for m, e in zip(mask_leaves, eligible)]
  return treedef.unflatten(new_leaves)


def cubic_sparsity_schedule(final_sparsity: float, num_steps: int,
                            initial_sparsity: float = 0.0) -> list[float]:
  """Gradual-pruning targets ``s_t = s_f + (s_i - s_f) (1 - t / n)^3``, ``t = 1..n``.

  Zhu & Gupta's cubic schedule (as in M-FAC / oBERT): prune fast while many redundant weights
  remain, slowly near the target. The last entry is exactly ``final_sparsity``.

  Example:
    >>> cubic_sparsity_schedule(0.9, 3)
    [0.6333..., 0.8666..., 0.9]
  """
  _check_sparsity(final_sparsity)
  _check_sparsity(initial_sparsity)
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
  if initial_sparsity > final_sparsity:
    raise ValueError(f"initial_sparsity {initial_sparsity} exceeds final_sparsity "
                     f"{final_sparsity}.")
  return [final_sparsity + (initial_sparsity - final_sparsity) * (1 - t / num_steps)**3
          for t in range(1, num_steps + 1)]


class KeepMaskedState(NamedTuple):
  """State of :func:`keep_masked`: the masks live in the state so they can change under jit."""
  masks: PyTree  # params-shaped bool masks


def keep_masked(masks: PyTree) -> optax.GradientTransformationExtraArgs:
  """Zeroes updates at pruned positions; chain it after any optimizer during fine-tuning.

  Pruned weights stay exactly zero as long as they were zero before (use :func:`apply_masks`).
  Swap the masks between pruning steps with :func:`replace_masks` (no retracing).

  Args:
    masks: params-shaped bool masks (``True`` = trainable).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra arguments of ``update`` are ignored).

  Example:
    >>> masks = {"kernel": jnp.array([[True, False]])}
    >>> tx = optax.chain(optax.adam(1e-3), keep_masked(masks))
    >>> updates, _ = tx.update({"kernel": jnp.ones((1, 2))}, tx.init(masks))
    >>> [round(u, 6) for u in updates["kernel"][0].tolist()]   # the pruned weight does not move
    [-0.001, 0.0]
  """

  def init_fn(params):
    del params
    return KeepMaskedState(masks)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args  # extra arguments of the transforms chained with it
    return apply_masks(updates, state.masks), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def replace_masks(opt_state, masks: PyTree):
  """The optimizer state with every :class:`KeepMaskedState` holding ``masks``."""
  is_keep = lambda s: isinstance(s, KeepMaskedState)
  return jax.tree.map(lambda s: KeepMaskedState(masks) if is_keep(s) else s, opt_state,
                      is_leaf=is_keep)
