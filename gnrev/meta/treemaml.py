"""Functional MAML and TreeMAML on stacked task batches (docs/meta.md).

With per-task parameters ``phi_i^0 = theta`` and step sizes ``alpha_1..alpha_K``, inner step
``k`` computes every task's support gradient, pools it over the task's cluster at that step
and descends:

.. math::

    g_i^k = \\nabla L(\\phi_i^{k-1}; S_i), \\qquad
    \\phi_i^k = \\phi_i^{k-1} - \\alpha_k \\frac{1}{|c_k(i)|} \\sum_{j \\in c_k(i)} g_j^k .

The meta-objective is the mean query loss ``F(theta) = mean_i L(phi_i^K; Q_i)``. Singleton
clusters give MAML exactly, so MAML is this class with :func:`singleton_labels`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from gnrev.meta.pooling import check_labels, check_pool, nest_labels, pool_by_labels

RECLUSTER = ("every_step", "once")


def num_tasks_of(tree, name: str) -> int:
  """The common leading (task) axis of the leaves of ``tree``; a ValueError if they disagree."""
  sizes = {leaf.shape[0] if getattr(leaf, "ndim", 0) else None for leaf in jax.tree.leaves(tree)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        f"Every leaf of {name} needs the same leading task axis; got sizes {sorted(map(str, sizes))}.")
  return sizes.pop()


class TreeMAML:
  """MAML whose inner gradients are pooled over the clusters of a task tree.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` for ONE task, ``batch = (x, y)``.
    inner_lrs: step sizes ``(alpha_1, ..., alpha_K)``; their number is the number of inner
      steps ``K``. All zeros gives the "no adaptation" baseline.
    first_order: treat pooled gradients as constants (FO-TreeMAML, the FOMAML analogue).
      The meta-gradient is then the mean query gradient at the adapted parameters.
    pool: ``"mean"`` (default; the sources only say "pooled") or ``"sum"``.
    cluster_fn: learned trees. ``cluster_fn(task_grads) -> (K, n) int32`` labels from the stacked
      task gradients, jittable (e.g. ``functools.partial(cluster_tasks, depth=2, num_steps=K)``).
      Used when ``labels`` is ``None``. Its output gets no gradient.
    recluster: ``"every_step"`` (the paper's Learned TreeMAML: cluster the gradients of inner
      step ``k`` and use row ``k``) or ``"once"`` (cluster the step-1 gradients once per
      meta-step and use all rows).
    enforce_nesting: with ``"every_step"``, intersect each step's clusters with the previous
      step's so the schedule is a tree (off by default, following the paper).

  Example:
    >>> loss_fn = lambda p, batch: jnp.mean((batch[0] @ p["w"] - batch[1]) ** 2)
    >>> theta = {"w": jnp.zeros(2)}
    >>> support = query = (jnp.ones((4, 3, 2)), jnp.ones((4, 3)))   # 4 tasks, 3 points each
    >>> labels = jnp.array([[0, 0, 2, 2], [0, 1, 2, 3]])             # 2 inner steps
    >>> learner = TreeMAML(loss_fn, inner_lrs=(0.01, 0.01))
    >>> learner.adapt(theta, support, labels)["w"].shape            # leaves: (n, ...)
    (4, 2)
    >>> loss = learner.meta_loss(theta, support, query, labels)
    >>> optimizer = optax.adam(1e-3)
    >>> step = jax.jit(learner.make_meta_step(optimizer))
    >>> theta, opt_state, loss = step(theta, optimizer.init(theta), support, query, labels)

  References:
    Garcia et al., "Meta-Learning with MAML on Trees", arXiv 2103.04691, Algorithms 1-2.
    Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning", ICML 2017.
  """

  def __init__(self, loss_fn: Callable, inner_lrs: Sequence[float], first_order: bool = False,
               pool: str = "mean", cluster_fn: Callable | None = None,
               recluster: str = "every_step", enforce_nesting: bool = False):
    if not callable(loss_fn):
      raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
    inner_lrs = tuple(float(a) for a in inner_lrs)
    if not inner_lrs:
      raise ValueError("inner_lrs must hold one step size per inner step (at least one).")
    check_pool(pool)
    if recluster not in RECLUSTER:
      raise ValueError(f"Unknown recluster {recluster!r}; allowed: {list(RECLUSTER)}.")
    self.loss_fn = loss_fn
    self.inner_lrs = inner_lrs
    self.num_steps = len(inner_lrs)
    self.first_order = first_order
    self.pool = pool
    self.cluster_fn = cluster_fn
    self.recluster = recluster
    self.enforce_nesting = enforce_nesting

  def _step_labels(self, labels, task_grads, k, previous):
    if labels is not None:
      return labels[k], labels
    grads = jax.lax.stop_gradient(task_grads)
    if self.recluster == "once":
      if k == 0:
        labels = jnp.asarray(self.cluster_fn(grads), jnp.int32)
      return labels[k], labels
    row = jnp.asarray(self.cluster_fn(grads), jnp.int32)[k]
    if self.enforce_nesting and previous is not None:
      row = nest_labels(previous, row)
    return row, None

  def adaptation_path(self, theta, support, labels=None):
    """All inner iterates and the labels used.

    Args:
      theta: meta-parameters (a pytree).
      support: ``(x, y)`` pytree with leading task axis ``n``.
      labels: int32 ``(K, n)`` schedule, or ``None`` to learn it with ``cluster_fn``.

    Returns:
      ``(path, used_labels)``: ``path`` has leaves ``(K + 1, n, ...)`` (``path[0]`` is ``theta``
      broadcast, ``path[K]`` the adapted parameters); ``used_labels`` is ``(K, n)`` int32.
    """
    num_tasks = num_tasks_of(support, "support")
    if labels is None:
      if self.cluster_fn is None:
        raise ValueError("labels is None but no cluster_fn was given: pass a (num_steps, "
                         "num_tasks) int32 schedule or construct TreeMAML with cluster_fn.")
    else:
      check_labels(labels, self.num_steps, num_tasks)
      labels = jnp.asarray(labels, jnp.int32)
    per_task_grad = jax.vmap(jax.grad(self.loss_fn))
    phi = jax.tree.map(lambda p: jnp.broadcast_to(p, (num_tasks,) + jnp.shape(p)), theta)
    path, rows, row = [phi], [], None
    for k, alpha in enumerate(self.inner_lrs):
      task_grads = per_task_grad(phi, support)
      if self.first_order:
        task_grads = jax.lax.stop_gradient(task_grads)
      row, labels = self._step_labels(labels, task_grads, k, row)
      pooled = pool_by_labels(task_grads, row, self.pool)
      phi = jax.tree.map(lambda p, g: p - alpha * g, phi, pooled)
      path.append(phi)
      rows.append(row)
    return jax.tree.map(lambda *ps: jnp.stack(ps), *path), jnp.stack(rows)

  def adapt(self, theta, support, labels=None):
    """The adapted parameters ``phi_i^K`` stacked over tasks (leaves ``(n, ...)``)."""
    path, _ = self.adaptation_path(theta, support, labels)
    return jax.tree.map(lambda p: p[-1], path)

  def _query_loss(self, task_params, query):
    return jnp.mean(jax.vmap(self.loss_fn)(task_params, query))

  def meta_loss(self, theta, support, query, labels=None):
    """Mean query loss after adaptation, ``F(theta)``; differentiate it for the meta-gradient."""
    if num_tasks_of(query, "query") != num_tasks_of(support, "support"):
      raise ValueError(f"support has {num_tasks_of(support, 'support')} tasks but query has "
                       f"{num_tasks_of(query, 'query')}; both need the same leading task axis.")
    return self._query_loss(self.adapt(theta, support, labels), query)

  def query_losses(self, theta, support, query, labels=None):
    """Mean query loss after each inner step, shape ``(K + 1,)`` (entry 0: no adaptation)."""
    path, _ = self.adaptation_path(theta, support, labels)
    return jax.vmap(self._query_loss, in_axes=(0, None))(path, query)

  def make_meta_step(self, optimizer: optax.GradientTransformation) -> Callable:
    """A pure, jittable outer step ``(theta, opt_state, support, query, labels) -> (theta,
    opt_state, loss)`` with the given optax optimizer (``opt_state = optimizer.init(theta)``).
    Pass ``labels`` as an argument (it may change between steps without recompiling), or
    ``None`` for a learned tree."""

    def meta_step(theta, opt_state, support, query, labels=None):
      loss, grads = jax.value_and_grad(self.meta_loss)(theta, support, query, labels)
      updates, opt_state = optimizer.update(grads, opt_state, theta)
      return optax.apply_updates(theta, updates), opt_state, loss

    return meta_step
