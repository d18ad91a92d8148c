"""Pooling task gradients over the clusters of a task tree (TreeMAML, docs/meta.md).

A task tree over the ``n`` tasks of a meta-batch is stored as an int32 array ``labels`` of
shape ``(num_steps, n)``: ``labels[k, i]`` is the cluster id of task ``i`` at inner step
``k``, coarse to fine. Ids are arbitrary integers in ``[0, n)``; only equality matters.
Pooling replaces each task's gradient by the mean over its cluster,

.. math::

    \\bar g_c^k = \\frac{1}{|c|} \\sum_{j \\in c} g_j^k ,

computed as a segment sum over the task axis, ``O(n P)`` rather than the ``O(n^2 P)`` of an
assignment matrix. Pooling couples tasks, so it acts on the stacked task axis and must
never be wrapped in a ``vmap`` over tasks.

A task whose gradient has a non-finite entry (a NaN loss, an overflow) is left out of its
cluster's pool, so that it cannot spread to the other tasks: the sum and the count run over the
finite members ``c_f`` of each cluster, and every member, the non-finite one included, gets
their pool (zero if no member is finite). :func:`tree_pool` counts the tasks left out.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

POOLS = ("mean", "sum")


def check_pool(pool: str) -> None:
  if pool not in POOLS:
    raise ValueError(f"Unknown pool {pool!r}; allowed: {list(POOLS)}.")


def check_labels(labels, num_steps: int, num_tasks: int) -> None:
  """Raises a ValueError if ``labels`` is not an integer ``(num_steps, num_tasks)`` tree schedule.

  Shapes are always checked; the id range ``[0, num_tasks)`` is checked when the values are
  concrete (not traced under ``jit``).
  """
  shape = tuple(np.shape(labels))
  expected = (num_steps, num_tasks)
  if shape != expected:
    raise ValueError(
        f"labels must have shape (num_steps, num_tasks) = {expected}, got {shape}.")
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"labels must be an integer array (int32), got {jnp.result_type(labels)}.")
  try:
    values = np.asarray(labels)
  except jax.errors.TracerArrayConversionError:
    return
  if values.size and (values.min() < 0 or values.max() >= num_tasks):
    raise ValueError(
        f"labels are cluster ids and must be in the range [0, num_tasks={num_tasks}); got values in "
        f"[{values.min()}, {values.max()}].")


def singleton_labels(num_steps: int, num_tasks: int) -> jax.Array:
  """The MAML schedule: every task is its own cluster at every step, shape ``(num_steps, n)``."""
  return jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32), (num_steps, num_tasks))


def finite_tasks(task_grads) -> jax.Array:
  """bool ``(n,)``: whether task ``i``'s gradient (every leaf's row ``i``) is finite."""
  return jnp.stack([jnp.all(jnp.isfinite(g.reshape(g.shape[0], -1)), axis=1)
                    for g in jax.tree.leaves(task_grads)]).all(axis=0)


def pool_by_labels(task_grads, labels_k: jax.Array, pool: str = "mean"):
  """Replaces each task's gradient by the mean (or sum) over its cluster at one step.

  Tasks with a non-finite gradient are left out of their cluster's mean or sum
  (:func:`finite_tasks`), and receive it like the other members.

  Args:
    task_grads: pytree whose leaves have a leading task axis of size ``n``.
    labels_k: int32 ``(n,)`` cluster ids in ``[0, n)``.
    pool: ``"mean"`` (the paper's pooling, as we read it) or ``"sum"``.

  Returns:
    A pytree like ``task_grads`` holding the pooled gradient of each task's cluster.

  Example:
    >>> g = {"w": jnp.array([[1.0], [3.0], [5.0]])}
    >>> pool_by_labels(g, jnp.array([0, 0, 2]))["w"].ravel().tolist()
    [2.0, 2.0, 5.0]
  """
  check_pool(pool)
  num_tasks = labels_k.shape[0]
  finite = finite_tasks(task_grads)

  def pool_leaf(g):
    per_task = (-1,) + (1,) * (g.ndim - 1)  # broadcasts a (n,) vector over g's rows
    sums = jax.ops.segment_sum(jnp.where(finite.reshape(per_task), g, 0), labels_k,
                               num_segments=num_tasks)
    if pool == "mean":
      counts = jax.ops.segment_sum(finite.astype(g.dtype), labels_k, num_segments=num_tasks)
      # Unused ids, and clusters with no finite member, have count 0: clamping keeps them 0.
      sums = sums / jnp.maximum(counts, 1).reshape(per_task)
    return sums[labels_k]

  return jax.tree.map(pool_leaf, task_grads)


class TreePoolState(NamedTuple):
  """State of :func:`tree_pool`."""
  step: jax.Array  # () int32: index of the inner step whose labels the next update uses
  # () int32: task gradients left out of their cluster's pool because they were not finite,
  # summed over all updates
  num_nonfinite: jax.Array


def tree_pool(labels: jax.Array | None = None,
              pool: str = "mean") -> optax.GradientTransformationExtraArgs:
  """Pools stacked per-task gradients over the clusters of inner step ``state.step``.

  Chain it with a step size to get TreeMAML's inner optimizer,
  ``optax.chain(tree_pool(labels), optax.scale(-alpha))``. The transform sees the task axis,
  so apply it to the stacked gradients of all tasks (never inside a ``vmap`` over tasks).

  Args:
    labels: int32 ``(num_steps, n)`` schedule; the update at step ``k`` pools with
      ``labels[k]``. May be ``None`` if every update passes ``step_labels``.
    pool: ``"mean"`` or ``"sum"``.

  Returns:
    A ``GradientTransformationExtraArgs``. ``update`` accepts the keyword-only extra argument
    ``step_labels`` (``(n,)`` ids, e.g. from a learned clustering) that overrides
    ``labels[state.step]``; other extra arguments are ignored. Non-finite task gradients are
    left out of the pools (:func:`pool_by_labels`) and counted in ``state.num_nonfinite``.

  Example:
    >>> labels = jnp.array([[0, 0, 2, 2], [0, 1, 2, 3]])         # 2 steps over 4 tasks
    >>> task_params = {"w": jnp.zeros((4, 1))}
    >>> task_grads = {"w": jnp.array([[1.0], [3.0], [5.0], [7.0]])}
    >>> tx = optax.chain(tree_pool(labels), optax.scale(-0.5))
    >>> state = tx.init(task_params)
    >>> updates, state = tx.update(task_grads, state)
    >>> optax.apply_updates(task_params, updates)["w"].ravel().tolist()   # pooled at step 1
    [-1.0, -1.0, -3.0, -3.0]

  References:
    Garcia et al., "Meta-Learning with MAML on Trees", arXiv 2103.04691, Algorithm 1.
  """
  check_pool(pool)

  def init_fn(params):
    del params
    return TreePoolState(step=jnp.zeros((), jnp.int32), num_nonfinite=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, step_labels=None, **extra_args):
    del params, extra_args
    if step_labels is None:
      if labels is None:
        raise ValueError("tree_pool needs labels at construction or step_labels in update.")
      step_labels = jnp.asarray(labels)[state.step]
    left_out = jnp.sum(~finite_tasks(updates), dtype=jnp.int32)
    return pool_by_labels(updates, step_labels, pool), TreePoolState(
        step=state.step + 1, num_nonfinite=state.num_nonfinite + left_out)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def nest_labels(coarse: jax.Array, fine: jax.Array) -> jax.Array:
  """Refines ``fine`` so that it nests in ``coarse``: tasks share a cluster only if they share both.

  Ids are canonicalised to the first task index of each cluster, so the result is in ``[0, n)``.
  Jittable.
  """
  num_tasks = coarse.shape[0]
  key = coarse.astype(jnp.int32) * num_tasks + fine.astype(jnp.int32)
  return jnp.argmax(key[:, None] == key[None, :], axis=1).astype(jnp.int32)
