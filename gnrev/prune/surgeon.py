"""Optimal Brain Surgeon pruning with FishLeg's learned inverse Fisher (FishLeg Surgeon).

OBS (Hassibi & Stork 1993) with the local model ``1/2 d^T F_gamma d`` around trained ``theta``:
deleting weight ``q`` and re-adjusting the others optimally costs

.. math:: \\rho_q = \\frac{\\theta_q^2}{2 [F_\\gamma^{-1}]_{qq}}, \\qquad
          \\delta = -\\frac{\\theta_q}{[F_\\gamma^{-1}]_{qq}} F_\\gamma^{-1} e_q.

For a set ``P`` pruned at once we use the independence approximation (one inverse-Fisher
product) ``delta = -F_gamma^{-1} (1_P o theta / diag F_gamma^{-1})``, then set ``theta_P = 0``
exactly (docs/prune.md). Every method is this one step with a different
:class:`InverseFisher`:

* FishLeg Surgeon (McGowan et al. 2024): ``Q(lam)`` fitted by FishLeg's auxiliary loss with
  isotropic Gaussian probes and theta frozen, so ``diag(Q)`` (closed form) is meaningful for
  every weight; masks applied to probes, ``Q`` products and Fisher products, so ``Q`` learns the
  inverse Fisher of the surviving sub-network, and it is refined (not re-fitted) between the
  steps of gradual pruning (:func:`refine_q`).
* diagonal empirical-Fisher OBS: ``diag(F_emp) + gamma`` inverted elementwise (compensation
  then only zeroes the pruned weights);
* magnitude pruning: ``F^{-1} = I`` (scores ``theta^2 / 2``);
* exact OBS: the dense ``(F_SS + gamma I)^{-1}`` on the surviving set ``S`` (tiny models).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from gnrev import optim
from gnrev.curvature import Likelihood, ggn_vector_product
from gnrev.prune.masks import apply_masks, dense_masks, select_masks

PyTree = Any


class InverseFisher(NamedTuple):
  """An approximation of ``(F_SS + gamma I)^{-1}`` on the surviving weights ``S``."""
  diagonal: PyTree  # params-shaped diag of the inverse (positive on surviving weights)
  vector: Callable[[PyTree], PyTree] | None  # v -> inverse @ v; None: the diagonal alone


def obs_scores(params: PyTree, inverse_diagonal: PyTree) -> PyTree:
  """OBS saliencies ``rho_i = theta_i^2 / (2 [F^{-1}]_ii)`` (the loss increase of pruning ``i``)."""
  return jax.tree.map(lambda p, d: p**2 / (2 * d), params, inverse_diagonal)


def obs_prune(params: PyTree, masks: PyTree, target_sparsity, inverse: InverseFisher,
              ranking: str = "global") -> tuple[PyTree, PyTree]:
  """One OBS step: score, prune the lowest to ``target_sparsity``, compensate, zero exactly.

  Args:
    params: current (masked) parameters.
    masks: current masks; pruned weights stay pruned.
    target_sparsity: fraction of prunable weights (Dense/Conv kernels) pruned afterwards.
    inverse: the inverse Fisher approximation on the surviving weights.
    ranking: ``"global"`` (one ranking over all kernels) or ``"layer"`` (per kernel).

  Returns:
    ``(masks, params)`` after pruning; pruned entries of ``params`` are exactly zero.
  """
  scores = obs_scores(params, inverse.diagonal)
  new_masks = select_masks(scores, masks, target_sparsity, ranking)
  scaled = jax.tree.map(lambda p, d, old, new: jnp.where(old & ~new, p / d, 0), params,
                        inverse.diagonal, masks, new_masks)
  delta = (inverse.vector(scaled) if inverse.vector is not None else
           jax.tree.map(jnp.multiply, inverse.diagonal, scaled))
  return new_masks, apply_masks(jax.tree.map(jnp.subtract, params, delta), new_masks)


def magnitude_inverse(params: PyTree) -> InverseFisher:
  """``F^{-1} = I``: OBS reduces to magnitude pruning without compensation."""
  return InverseFisher(jax.tree.map(jnp.ones_like, params), None)


def diagonal_fisher_inverse(mean_squared_grads: PyTree, damping: float) -> InverseFisher:
  """Diagonal empirical-Fisher OBS: ``[F^{-1}]_ii = 1 / (E[g_i^2] + gamma)``."""
  return InverseFisher(jax.tree.map(lambda s: 1.0 / (s + damping), mean_squared_grads), None)


def squared_gradient_sum(apply_fn: Callable, likelihood: Likelihood) -> Callable:
  """``(params, x, y) -> params-shaped sum over the batch of squared per-example gradients``.

  A pure function (jit it once, then pass it to :func:`mean_squared_gradients` as ``sum_fn``).
  """

  def example_gradient(params, x, y):
    return jax.grad(lambda p: likelihood.nll(apply_fn(p, x[None]), y[None]))(params)

  def total(params, x, y):
    grads = jax.vmap(example_gradient, (None, 0, 0))(params, x, y)
    return jax.tree.map(lambda g: jnp.sum(g**2, axis=0), grads)

  return total


def mean_squared_gradients(apply_fn: Callable, params: PyTree, x: jax.Array, y: jax.Array,
                           likelihood: Likelihood, chunk_size: int = 256, *,
                           sum_fn: Callable | None = None) -> PyTree:
  """Diagonal empirical Fisher ``E_n[g_n^2]`` from per-example gradients at the true labels.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``.
    params: the trained parameters.
    x, y: inputs and labels (batch-leading).
    likelihood: the model's likelihood (its ``nll`` gives the per-example loss).
    chunk_size: examples per vmapped chunk (memory).
    sum_fn: :func:`squared_gradient_sum` of ``apply_fn`` and ``likelihood``, staged by the
      caller (e.g. ``jax.jit``); None builds it unstaged.

  Returns:
    Params-shaped mean squared per-example gradients.
  """
  sum_fn = squared_gradient_sum(apply_fn, likelihood) if sum_fn is None else sum_fn
  total = None
  for start in range(0, len(x), chunk_size):
    part = sum_fn(params, x[start:start + chunk_size], y[start:start + chunk_size])
    total = part if total is None else jax.tree.map(jnp.add, total, part)
  return jax.tree.map(lambda t: t / len(x), total)


def exact_inverse_fisher(apply_fn: Callable, params: PyTree, masks: PyTree, x: jax.Array,
                         likelihood: Likelihood, damping: float) -> InverseFisher:
  """Exact OBS: dense ``(F_SS + gamma I)^{-1}`` (zero rows/columns at pruned weights).

  ``F`` is the Fisher (= GGN for canonical links) on the batch ``x``, materialised column by
  column; only for tiny models (``P^2`` memory, ``P^3`` time).
  """
  flat, unravel = ravel_pytree(params)
  fisher_vector = ggn_vector_product(apply_fn, params, x, likelihood)
  fisher = jax.jacfwd(lambda v: ravel_pytree(fisher_vector(unravel(v)))[0])(jnp.zeros_like(flat))
  keep = ravel_pytree(jax.tree.map(lambda m: m.astype(flat.dtype), masks))[0]
  identity = jnp.eye(flat.size, dtype=flat.dtype)
  restricted = keep[:, None] * fisher * keep[None, :] + damping * identity
  inverse = jnp.linalg.inv(restricted) * keep[:, None] * keep[None, :]
  return InverseFisher(unravel(jnp.diag(inverse)),
                       lambda v: unravel(inverse @ ravel_pytree(v)[0]))


class SurgeonState(NamedTuple):
  """FishLeg Surgeon's learned inverse Fisher ``Q(lam)`` and its aux optimizer."""
  lam: dict  # block name -> Q factors, as in optim.ScaleByFishLegState.lam
  aux_opt_state: optax.OptState  # Adam state over lam
  count: jax.Array  # int32 (), aux steps done (folds the probe key)
  aux_loss: jax.Array  # float32 (), aux loss of the last aux step


def init_surgeon(params: PyTree, damping: float, mean_squared_grads: PyTree | None = None,
                 q_family: str = "kronecker") -> SurgeonState:
  """``Q_0 = diag(1 / (E[g^2] + gamma))`` (FLS's diagonal warm start) or ``I / gamma``.

  Args:
    params: the parameters Q acts on (shapes only).
    damping: ``gamma`` > 0.
    mean_squared_grads: params-shaped ``E[g^2]`` (:func:`mean_squared_gradients`); ``None``
      gives ``Q_0 = I / gamma``, the inverse of ``F_gamma`` for ``F = 0``.
    q_family: FishLeg's Q family, ``"kronecker"``, ``"diagonal"`` or ``"full"``.

  Returns:
    A :class:`SurgeonState`.
  """
  if not damping > 0:
    raise ValueError(f"FishLeg Surgeon needs damping > 0, got {damping}.")
  if mean_squared_grads is None:
    mean_squared_grads = jax.tree.map(jnp.zeros_like, params)
  structure = optim.q_structure(params, q_family)
  lam = structure.lam_for_diagonal(jax.tree.map(lambda s: 1.0 / (s + damping),
                                                mean_squared_grads))
  # Adam's state has the same structure for every step size; refine_q picks the step size.
  return SurgeonState(lam, optax.adam(1.0).init(lam), jnp.zeros([], jnp.int32),
                      jnp.zeros([], jnp.float32))


def _masked(tree: PyTree, masks: PyTree) -> PyTree:
  return jax.tree.map(lambda x, m: x * m.astype(x.dtype), tree, masks)


def masked_q_vector(state: SurgeonState, masks: PyTree, v: PyTree) -> PyTree:
  """``M Q(lam) M v``: the learned inverse Fisher of the surviving sub-network applied to ``v``."""
  structure = optim.q_structure(v, optim.q_family_of(state.lam))
  return _masked(structure.q_vector(state.lam, _masked(v, masks)), masks)


def fishleg_inverse(state: SurgeonState, params: PyTree, masks: PyTree) -> InverseFisher:
  """FishLeg Surgeon's :class:`InverseFisher`: closed-form ``diag(Q)`` and one Q product."""
  structure = optim.q_structure(params, optim.q_family_of(state.lam))
  return InverseFisher(structure.diagonal(state.lam, params),
                       functools.partial(masked_q_vector, state, masks))


def q_refiner(apply_fn: Callable, likelihood: Likelihood, batch_size: int | None,
              damping: float, aux_learning_rate: float, precondition_aux: bool) -> Callable:
  """``(state, params, masks, x, rng, num_steps) -> state``: :func:`refine_q`'s aux-step loop.

  A pure function of its arguments (``num_steps`` may be traced); jit it once for many
  refinements with the same settings (the arguments are those of :func:`refine_q`).
  """
  aux_opt = optax.adam(aux_learning_rate)

  def aux_step(state, key, params, masks, x):
    probe_key, batch_key = jax.random.split(jax.random.fold_in(key, state.count))
    batch = x if batch_size is None else x[jax.random.randint(batch_key, (batch_size,), 0,
                                                              len(x))]
    fisher_vector = ggn_vector_product(apply_fn, params, batch, likelihood)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(probe_key, len(leaves))
    u = _masked(treedef.unflatten([jax.random.normal(k, p.shape, p.dtype)
                                   for k, p in zip(keys, leaves)]), masks)
    # Masks everywhere: probes, Q and the Fisher product live on the surviving weights.
    aux_loss, lam_grad = optim.fishleg_aux_loss_and_gradient(
        lambda lam, w: masked_q_vector(state._replace(lam=lam), masks, w), state.lam, u,
        lambda v: _masked(fisher_vector(v), masks), damping, precondition_aux)
    step, aux_opt_state = aux_opt.update(lam_grad, state.aux_opt_state, state.lam)
    return SurgeonState(optax.apply_updates(state.lam, step), aux_opt_state,
                        optax.safe_increment(state.count), aux_loss.astype(jnp.float32))

  def refine(state, params, masks, x, rng, num_steps):
    x = jnp.asarray(x)  # a host array cannot be indexed by the traced batch rows
    return jax.lax.fori_loop(0, num_steps, lambda _, s: aux_step(s, rng, params, masks, x), state)

  return refine


def refine_q(state: SurgeonState, apply_fn: Callable, params: PyTree, masks: PyTree,
             x: jax.Array, likelihood: Likelihood, rng: jax.Array, *, num_steps: int,
             damping: float, batch_size: int | None = 128, aux_learning_rate: float = 1e-3,
             precondition_aux: bool = True) -> SurgeonState:
  """``num_steps`` FishLeg aux steps on lam with theta frozen and the masks applied everywhere.

  Each step: Gaussian probe ``u`` (masked, unit norm), ``v = M Q M u``, residual
  ``r = M F M v + gamma v - u`` with the exact Fisher (GGN) product on a random batch of ``x``,
  optionally ``r <- M Q M r``, and an Adam step along ``J_lam(v)^T r`` (docs/prune.md).
  Its minimiser is ``Q = (F_SS + gamma I)^{-1}`` on the surviving weights.

  Args:
    state: current :class:`SurgeonState` (from :func:`init_surgeon` or a previous refine).
    apply_fn: ``apply_fn(params, x) -> outputs``.
    params, masks: the frozen parameters and current masks.
    x: inputs for Fisher products (labels are not needed: the Fisher is the model's own).
    likelihood: the model's predictive distribution.
    rng: PRNG key (folded with the step count, so refinements continue the stream).
    num_steps: aux steps to run.
    damping: ``gamma``.
    batch_size: Fisher batch per step, drawn with replacement; ``None`` uses all of ``x``.
    aux_learning_rate: Adam step size on lam.
    precondition_aux: use ``Q r`` in place of ``r`` (docs/optim.md, "The auxiliary loss").

  Returns:
    The refined state.
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
  refine = q_refiner(apply_fn, likelihood, batch_size, float(damping), float(aux_learning_rate),
                     bool(precondition_aux))
  return refine(state, params, masks, x, rng, num_steps)


def surgeon_step(state: SurgeonState, apply_fn: Callable, params: PyTree, masks: PyTree,
                 x: jax.Array, likelihood: Likelihood, target_sparsity, rng: jax.Array, *,
                 num_aux_steps: int, damping: float, ranking: str = "global",
                 **refine_options) -> tuple[PyTree, PyTree, SurgeonState]:
  """Refine ``Q`` on the surviving weights, then one OBS step with it.

  Returns:
    ``(masks, params, state)``; see :func:`fishleg_surgeon` for the arguments.
  """
  state = refine_q(state, apply_fn, params, masks, x, likelihood, rng,
                   num_steps=num_aux_steps, damping=damping, **refine_options)
  masks, params = obs_prune(params, masks, target_sparsity,
                            fishleg_inverse(state, params, masks), ranking)
  return masks, params, state


def fishleg_surgeon(apply_fn: Callable, params: PyTree, x: jax.Array, likelihood: Likelihood,
                    target_sparsity, *, rng: jax.Array, damping: float = 1e-3,
                    num_aux_steps: int = 1000, mean_squared_grads: PyTree | None = None,
                    q_family: str = "kronecker", masks: PyTree | None = None,
                    ranking: str = "global", **refine_options) -> tuple[PyTree, PyTree]:
  """One-shot FishLeg Surgeon: fit ``Q ~ F_gamma^{-1}`` with theta frozen, score, prune, compensate.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``.
    params: trained parameters.
    x: inputs for the Fisher products.
    likelihood: the model's predictive distribution (e.g. ``curvature.categorical()``).
    target_sparsity: fraction of Dense/Conv kernel weights to prune (biases are never pruned).
    rng: PRNG key for probes and batches.
    damping: ``gamma`` in ``F + gamma I``.
    num_aux_steps: aux steps fitting Q.
    mean_squared_grads: ``E[g^2]`` for the diagonal warm start (``None``: ``Q_0 = I/gamma``).
    q_family: ``"kronecker"`` (default), ``"diagonal"`` or ``"full"`` (tiny models).
    masks: existing masks (default: nothing pruned).
    ranking: ``"global"`` or ``"layer"``.
    **refine_options: ``batch_size``, ``aux_learning_rate``, ``precondition_aux`` of
      :func:`refine_q`.

  Returns:
    ``(masks, params)``: bool masks and pruned parameters (pruned entries exactly zero).

  Example:
    >>> import flax.linen as nn
    >>> from gnrev import curvature
    >>> model, x = nn.Dense(4), jnp.ones((8, 5))
    >>> params = model.init(jax.random.key(0), x)
    >>> masks, pruned = fishleg_surgeon(model.apply, params, x, curvature.categorical(), 0.9,
    ...                                 rng=jax.random.key(1), num_aux_steps=10)
    >>> int(masks["params"]["kernel"].sum())                # 2 of 20 kernel weights survive
    2

  References:
    McGowan et al., "Efficient Model Compression Techniques with FishLeg", arXiv 2412.02328;
    Hassibi & Stork, "Second order derivatives for network pruning: Optimal Brain Surgeon", 1993.
  """
  masks = dense_masks(params) if masks is None else masks
  state = init_surgeon(params, damping, mean_squared_grads, q_family)
  masks, params, _ = surgeon_step(state, apply_fn, params, masks, x, likelihood,
                                  target_sparsity, rng, num_aux_steps=num_aux_steps,
                                  damping=damping, ranking=ranking, **refine_options)
  return masks, params


def gradual_pruning(prune_step: Callable, fine_tune: Callable, params: PyTree,
                    schedule, masks: PyTree | None = None) -> tuple[PyTree, PyTree]:
  """Alternates pruning to each scheduled sparsity with masked fine-tuning.

  Args:
    prune_step: ``(params, masks, sparsity) -> (masks, params)``, e.g. a closure over
      :func:`surgeon_step` that carries the :class:`SurgeonState` (Q refined, not re-fitted).
    fine_tune: ``(params, masks) -> params`` keeping pruned weights at zero (e.g. an optimizer
      chained with :func:`keep_masked`).
    params: trained parameters.
    schedule: increasing target sparsities (e.g. :func:`cubic_sparsity_schedule`).
    masks: existing masks (default: nothing pruned).

  Returns:
    ``(masks, params)`` at the last scheduled sparsity, after its fine-tuning.
  """
  masks = dense_masks(params) if masks is None else masks
  for target in schedule:
    masks, params = prune_step(params, masks, target)
    params = fine_tune(params, masks)
  return masks, params
