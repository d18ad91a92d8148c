"""FishLeg (Garcia et al., ICLR 2023) as an optax transformation.

FishLeg learns a PSD ``Q(lam) ~ (F + gamma I)^{-1}`` by stochastic minimisation of the auxiliary
loss (docs/optim.md, "The auxiliary loss")

.. math:: A(\\lambda; u) = \\tfrac12 u^\\top Q F_\\gamma Q u - u^\\top Q u,
          \\qquad F_\\gamma = F + \\gamma I,

whose minimiser over all PSD ``Q`` (probes ``u`` with isotropic second moment) is
``F_gamma^{-1}``, and steps along ``Q g``. The loss is linear in ``F``, so an unbiased minibatch
Fisher product gives an unbiased aux gradient.

Aux step (every ``update_aux_every`` parameter steps, one aux-optimizer step on lam): unit
probe ``u`` (the gradient or a Gaussian draw), ``v = Q u``, residual ``r = F v + gamma v - u``,
optionally preconditioned ``r <- Q r``, lam-gradient ``J_lam(Q(lam) u)^T r``, one step of the
aux optimizer (plain Adam on the factors, as in the official code). A non-finite residual (e.g.
a NaN Fisher product) skips the aux step and leaves lam and its optimizer state untouched
(``num_aux_skipped`` counted); a non-finite gradient or step skips the whole update (zero
update, state unchanged, ``num_skipped`` counted). ``fvp_fn``'s result is checked against the
params' structure, shapes and dtypes.

Defaults (docs/optim.md, "Defaults"): the official algorithm (``Q_0 = I / damping``, damping
0.1, learning rate 5e-4 on the heavy-ball trace = the official 0.005 on its EMA, plain Adam at
1e-4 on the factors, aux step every 10, preconditioned aux gradient) plus one scale-aware
guard, the *trust ratio*: ``Q = q_scale * Q(lam)`` with ``q_scale = min(1, trust_ratio * t)``
recomputed at every aux step, where ``t`` (:func:`fishleg_fitted_scale`) is the multiple of
``Q(lam)`` that minimises the aux loss along the probe, i.e. ``1 / t`` is how many damped
Newton steps along the gradient ``Q(lam)`` takes. The guard caps that at ``trust_ratio``, which
:func:`fishleg` sets from ``max_newton_steps`` (default 10): the step along the gradient, with
momentum's steady gain ``1 / (1 - momentum)``, is at most 10 damped Newton steps
(``trust_ratio = 10 * (1 - 0.9) / 5e-4 = 2000`` at the defaults), a quarter of heavy-ball
momentum's stability bound ``2 (1 + momentum) / (1 - momentum) = 38`` along a direction. A
tighter cap (1) stalled the MNIST autoencoder at a train NLL of ~180 on both inits (Q shrunk
44x by step 500: every direction pays for the steepest one, experiments/README.md). It costs
no Fisher product (the aux step's serves, by linearity) and leaves Q alone while Q is small
enough for the Fisher along the gradient. It makes the warm start scale-aware,
``Q_0 = min(1 / damping, trust_ratio / (u^T F u + damping)) I`` on the first aux batch, and
shrinks Q whenever the Fisher along the gradient outgrows it later: on flax's default Dense
init of the paper's MNIST autoencoder (kernels sqrt(3) times larger than PyTorch's default)
``u^T F u`` is 5.6 at init against 0.52 on PyTorch's, and it grows by two orders of magnitude
in the first tens of steps, faster than Adam at 1e-4 on the factors can shrink Q.

Why plain Adam at 1e-3 on the factors diverged on that network (its earlier NaN): the aux
gradient of one probe is low rank, so Adam's step on a dense ``n x n`` factor is a near rank-1
sign pattern of spectral norm ``~n * aux_lr``, about 1 for ``n = 1000``; at the official 1e-4 it
is 0.1, and :func:`scale_by_factor_geometry` (an optional aux optimizer) bounds it for any rate.

Damping is in the loss's units: Q is bounded by ``1 / damping``, and the Fisher of a loss summed
over ``D`` outputs is ``D`` times that of the per-output mean, so a damping ``gamma`` for a
summed loss corresponds to ``gamma / D`` for the mean (0.1 summed over 784 pixels ~ 1.3e-4 per
pixel). The trust ratio does not depend on the loss's units.

Gating, two ways (``update``'s keyword ``update_aux``):

* ``update_aux=None`` (default): one transform, the aux step runs under ``lax.cond`` when
  ``count % update_aux_every == 0``. Works unchanged in ``optax.chain``, ``inject_hyperparams``
  and any jitted step; only the taken branch executes.
* ``update_aux=True`` / ``False`` (Python bools): the aux step is traced in / left out, with no
  ``lax.cond``; the caller compiles the two programs and picks one per step (kfac-jax's split
  into curvature update and preconditioning, with the state kept in one place). ``fvp_fn`` is
  then not needed on ``False`` steps. An array flag gates with ``lax.cond`` on it.

Cost (``benchmarks/fishleg_step.py``, XLA FLOP counts, 2 CPU cores): a plain FishLeg step costs
the gradient plus one Q product. From the factors that is ``4 n m (n + m)`` FLOPs per Kronecker
block of shape ``(n, m)``, as much as the gradient's ``6 B W`` at the paper's MNIST autoencoder
with batch 1000; the state therefore keeps ``L L^T`` and ``R^T R`` (``q_cache``, rebuilt after
each aux step for ``2 (n^3 + m^3)``) and plain steps apply Q with two products, ``2 n m (n + m)``
(no-aux step 2.1x -> 1.6x Adam there). An aux step adds one Fisher product (``~10 B W``) and
``Q u``, the preconditioned residual and the lam-gradient, all from the cache in closed form
(:meth:`QStructure.q_vector_vjp_cached`: ~4 cached Q products plus ``n^3 + m^3`` per block,
instead of ~8 through the factors), and the cache rebuild. (The ``"kronecker_per_example"``
family, given the gradient's per-example factors, applies Q to the gradient and to the gradient
probe with the batch as the products' inner size, and takes the lam-gradient the same way:
:meth:`~gnrev.optim.q_blocks.KroneckerBlock.per_example_vjp`.) The Q product does not shrink with
the batch: 9.0 GFLOP at the paper's autoencoder against Adam's 1.6 GFLOP step at batch 100
(amortised floor ~10x there, ~2.1x at batch 1000). Measured before the closed-form aux step
(batch 1000): split 2.30x, ``lax.cond`` 2.58x (before the cache 2.74x and 2.90x); digits size
split 2.03x, ``lax.cond`` 2.34x. The
``lax.cond`` path pays ~0.3x Adam more at both sizes because XLA copies every lam, cache and
aux-optimizer buffer into and out of the conditional on every step (no FLOPs, but bytes and
count). A ``fvp_fn`` linearised outside ``update`` (``curvature.ggn_vector_product(...)`` built
in the step) also makes the aux batch's forward pass, whose residuals are the conditional's
operands, run on every step (2.59x instead of 2.34x at the digits size). Therefore: build
``fvp_fn`` lazily (``lambda v: curvature.ggn_vector_product(...)(v)``) when the aux batch
differs from the gradient's; keep the default ``lax.cond`` path for convenience (chains,
launchers, tests); use the split where step time matters (a Python loop jitting
``update_aux=True`` and ``False`` steps, or a scan over groups of ``k`` steps).

Deviations from the official code, on purpose (listed in docs/optim.md):

* every aux step draws a fresh probe key (``rng`` folded with the step count);
* Fisher products come from the caller's ``fvp_fn`` (exact GGN via
  :func:`gnrev.curvature.ggn_vector_product` recommended; no rank-1 estimator);
* the diagonal warm start uses the mean *squared* gradient (:func:`fishleg_warm_start`);
* momentum is a heavy-ball trace ``m <- beta m + Q g`` (optax ``trace``) instead of the official
  EMA ``beta m + (1 - beta) Q g``: identical direction, the learning rate differs by
  ``1 / (1 - beta)`` (the official example's 0.005 is 5e-4 here), and with ``Q_0 = s I`` the
  first steps are exactly SGD-momentum with rate ``learning_rate * s``;
* the trust ratio above (``max_newton_steps=None`` turns it off: :func:`fishleg_official`);
* each step uses Q after that step's aux update.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gnrev.optim.q_blocks import q_family_of, q_structure

PyTree = Any
PROBES = ("gradient", "gaussian")


class ScaleByFishLegState(NamedTuple):
  """State of :func:`scale_by_fishleg`."""
  count: jax.Array  # int32 (), number of updates done
  lam: dict  # block name -> Q factors ({L, R, A} | {d} | {C}), dtype of the params
  aux_opt_state: optax.OptState  # state of the aux optimizer over lam
  momentum: PyTree  # params-shaped heavy-ball trace of Q g
  aux_loss: jax.Array  # float32 (), aux loss at the last completed aux step (0 before the first)
  # float32 (), Q = q_scale * Q(lam): fitted at every aux step when init_scale is None (the
  # aux loss minimised over Q's overall scale, see scale_by_fishleg), 1 otherwise.
  q_scale: jax.Array
  # QStructure.product_cache(lam) (L L^T, R^T R per Kronecker block), rebuilt whenever lam
  # changes; the update's Q g reads it (half the FLOPs of Q g from the factors). Change lam only
  # through fishleg_set_lam, which keeps the two consistent.
  q_cache: dict
  # int32 (), updates skipped because the gradient or the step was not finite (nothing else
  # changed on those updates, see scale_by_fishleg).
  num_skipped: jax.Array
  # int32 (), aux steps skipped because the aux loss or the new lam was not finite (e.g. a NaN
  # Fisher product) on updates that were applied (a skipped update counts in num_skipped only).
  num_aux_skipped: jax.Array


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
  """Validates Python numbers; arrays (e.g. from ``inject_hyperparams``) pass through."""
  if isinstance(value, (int, float)) and (value < 0 or (value == 0 and not allow_zero)):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"fishleg: {name} must be {bound}, got {value}.")


def _tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _all_finite(tree: PyTree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _keep_if_finite(finite: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  """``new`` where ``finite`` else ``old``, leaf by leaf: FishLeg's one non-finite guard.

  A select rather than ``lax.cond`` (as in ``optax.apply_if_finite``): no buffers are copied into
  and out of a conditional, and the skipped branch costs only the elementwise selects.
  """
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def scale_by_factor_geometry() -> optax.GradientTransformation:
  """Turns a normalised step on FishLeg's factors into a relative change of Q (aux optimizer).

  Adam moves every entry of a factor by about its learning rate. For a dense ``n x n`` factor
  (``L``, ``R``, ``C``) and the low-rank gradient a single probe gives, that is a sign pattern of
  spectral norm up to ``n * lr``: with ``n = 1000`` and ``lr = 1e-3`` one aux step can double a
  Kronecker block's largest eigenvalue in directions the probe never saw (the divergence of the
  paper's MNIST autoencoder). This transform divides a dense factor's step by its side ``n`` and
  multiplies an elementwise factor's step (``A``, ``d``) by the factor's magnitude, so that the
  learning rate bounds the relative change of each factor per aux step whatever the layer width
  and the scale of Q (dense factors: relative to their root-mean-square singular value).
  """

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_factor_geometry needs the current factors (params).")

    def scale(path, step, factor):
      name = str(getattr(path[-1], "key", path[-1]))
      if name in ("L", "R", "C"):
        # ||step||_2 <= ||step||_F <= n lr for Adam; the factor's scale is ~||factor||_F / sqrt(n).
        n = factor.shape[0]
        return step * (jnp.linalg.norm(factor) / (n * math.sqrt(n)))
      return step * jnp.abs(factor)

    return jax.tree_util.tree_map_with_path(scale, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def default_aux_optimizer(aux_learning_rate: float) -> optax.GradientTransformation:
  """FishLeg's aux optimizer, as in the official code: plain Adam on the Q factors.

  At the official rate 1e-4 a step moves a dense ``n x n`` factor's spectrum by at most
  ``~n * 1e-4`` (0.1 at ``n = 1000``); for steps bounded relative to each factor at any rate,
  chain :func:`scale_by_factor_geometry` instead.
  """
  return optax.adam(aux_learning_rate)


def _check_fvp_result(fvp_v: PyTree, v: PyTree) -> None:
  """Raises a TypeError naming ``fvp_fn`` unless ``fvp_v`` has ``v``'s structure, shapes, dtypes."""
  if jax.tree.structure(fvp_v) != jax.tree.structure(v):
    raise TypeError(f"fishleg: fvp_fn(v) must return a tree with the structure of the params "
                    f"{jax.tree.structure(v)}; got {jax.tree.structure(fvp_v)}.")
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(fvp_v)[0], jax.tree.leaves(v)):
    if a.shape != b.shape or a.dtype != b.dtype:
      raise TypeError(f"fishleg: fvp_fn(v) must return leaves with the shapes and dtypes of the "
                      f"params; at {jax.tree_util.keystr(path)} expected {b.dtype}{list(b.shape)}, "
                      f"got {a.dtype}{list(a.shape)}.")


def fishleg_aux_loss_and_gradient(q_vector: Callable[[PyTree, PyTree], PyTree], lam: PyTree,
                                  probe: PyTree, fvp_fn: Callable[[PyTree], PyTree], damping,
                                  precondition_aux: bool = True) -> tuple[jax.Array, PyTree]:
  """FishLeg's auxiliary loss at ``lam`` for one probe, and the (preconditioned) gradient.

  .. math::

      A(\\lambda) = \\tfrac12 v^\\top (F + \\gamma I) v - u^\\top v, \\qquad v = Q(\\lambda) u,

  with ``u`` the probe normalised to unit norm; its minimiser over ``Q`` is ``(F + gamma I)^{-1}``
  (Garcia et al. 2023, eq. for the auxiliary loss; docs/optim.md). The gradient is
  ``dv/dlam^T r`` with ``r = (F + gamma I) v - u``, or ``Q r`` when ``precondition_aux``.

  Args:
    q_vector: ``(lam, v) -> Q(lam) v`` (e.g. ``q_structure(params).q_vector``, or a masked one).
    lam: the Q factors.
    probe: params-shaped ``u`` (any norm).
    fvp_fn: ``v -> F v`` (no damping).
    damping: ``gamma``.
    precondition_aux: use ``Q r`` instead of ``r``.

  Returns:
    ``(aux_loss, lam_grad)``.
  """
  u, _ = _unit(probe)
  v, q_vjp = jax.vjp(lambda l: q_vector(l, u), lam)
  aux_loss, residual = _aux_loss_and_residual(u, v, _checked_fvp(fvp_fn, v), damping)
  if precondition_aux:
    residual = q_vector(lam, residual)
  (lam_grad,) = q_vjp(residual)
  return aux_loss, lam_grad


def _unit(probe: PyTree) -> tuple[PyTree, jax.Array]:
  """``(probe / |probe|, |probe|)``."""
  norm = optax.tree.norm(probe)
  return jax.tree.map(lambda x: x / norm, probe), norm


def _checked_fvp(fvp_fn: Callable[[PyTree], PyTree], v: PyTree) -> PyTree:
  fvp_v = fvp_fn(v)
  _check_fvp_result(fvp_v, v)
  return fvp_v


def _aux_loss_and_residual(u: PyTree, v: PyTree, fvp_v: PyTree,
                           damping: float) -> tuple[jax.Array, PyTree]:
  """``(A, r)`` for ``v = Q u`` and ``fvp_v = F v``: ``A = v^T F_gamma v / 2 - u^T v`` and
  ``r = F_gamma v - u``."""
  damped_fv = jax.tree.map(lambda f, x: f + damping * x, fvp_v, v)
  aux_loss = 0.5 * _tree_vdot(v, damped_fv) - _tree_vdot(u, v)
  return aux_loss, jax.tree.map(jnp.subtract, damped_fv, u)


def fishleg_fitted_scale(u: PyTree, v: PyTree, fvp_v: PyTree, damping) -> jax.Array:
  """The scale ``t`` that minimises the aux loss of ``t Q`` for one probe, in closed form.

  With ``v = Q u`` and ``fvp_v = F v``, the aux loss of ``t Q`` is
  ``t^2 v^T F_gamma v / 2 - t u^T v``, minimised at

  .. math:: t^\\star = \\frac{u^\\top v}{v^\\top F v + \\gamma\\, v^\\top v}.

  For ``Q = I`` and a unit ``u`` this is ``1 / (u^T F u + gamma)``: the step along ``u`` that
  minimises the damped quadratic model of the loss (a Newton step restricted to ``u``). Where
  the damped curvature ``v^T F_gamma v`` is not positive (an indefinite ``fvp_fn``, e.g. a
  Hessian product) no multiple minimises the loss and the result is ``+inf``. The trust ratio
  built on it assumes a PSD curvature (Fisher or GGN products): with Hessian products on
  Rosenbrock's function it diverged (``tests/optim``' battery runs it with the guard off).
  """
  curvature = _tree_vdot(v, fvp_v) + damping * _tree_vdot(v, v)
  return jnp.where(curvature > 0, _tree_vdot(u, v) / curvature, jnp.inf)


def _aux_loss_and_gradient_cached(structure, lam, cache, q_scale, probe, fvp_fn, damping,
                                  precondition_aux, trust_ratio, per_example=None):
  """Aux loss, lam-gradient and scale of ``Q = q_scale * Q(lam)`` from lam's product cache.

  :func:`fishleg_aux_loss_and_gradient` for ``q_scale * structure.q_vector`` (same values up to
  rounding, float64 test), with ``Q u``, the preconditioned residual and the lam-gradient from
  the cached ``L L^T`` and ``R^T R`` (:meth:`QStructure.q_vector_vjp_cached`) instead of autodiff
  through the factors. With a ``trust_ratio``, ``q_scale`` is first replaced by
  ``min(1, trust_ratio * t)``, ``t`` from :func:`fishleg_fitted_scale` (the same Fisher product
  serves both, by linearity). ``per_example`` (the probe, a gradient, in factored form per block)
  lets the ``"kronecker_per_example"`` blocks take ``Q u`` and the lam-gradient with the
  examples as the inner size (:meth:`KroneckerBlock.per_example_vjp`).
  """
  u, norm = _unit(probe)
  if per_example:
    per_example = {name: terms._replace(output_grads=terms.output_grads / norm)
                   for name, terms in per_example.items()}
  shape_u = structure.q_vector_cached(lam, cache, u, per_example)
  fvp_shape_u = _checked_fvp(fvp_fn, shape_u)
  if trust_ratio is not None:
    fitted = fishleg_fitted_scale(u, shape_u, fvp_shape_u, damping)
    q_scale = jnp.minimum(1.0, trust_ratio * fitted).astype(q_scale.dtype)
  scaled = lambda tree, power=1: jax.tree.map(lambda x: (q_scale**power * x).astype(x.dtype),
                                              tree)
  aux_loss, residual = _aux_loss_and_residual(u, scaled(shape_u), scaled(fvp_shape_u), damping)
  # d/dlam <q_scale Q(lam) r, q_scale Q(lam) u> (preconditioned) or <r, q_scale Q(lam) u>.
  lam_grad = structure.q_vector_vjp_cached(lam, cache, u, residual, precondition_aux, per_example)
  return aux_loss, scaled(lam_grad, 2 if precondition_aux else 1), q_scale


def fishleg_aux_due(count, update_aux_every: int, aux_warmup_steps: int = 0):
  """Whether FishLeg's update number ``count`` (0-based) takes an aux step: at every update
  before ``aux_warmup_steps``, then at every ``update_aux_every``-th. For a caller that gates
  the aux step itself (``update_aux=``): works on Python ints and on arrays."""
  return (count % update_aux_every == 0) | (count < aux_warmup_steps)


def scale_by_fishleg(
    damping: float = 0.1,
    aux_learning_rate: float = 1e-4,
    update_aux_every: int = 10,
    momentum: float = 0.9,
    init_scale: float | None = None,
    probe: str = "gradient",
    precondition_aux: bool = True,
    q_family: str = "kronecker",
    aux_optimizer: optax.GradientTransformation | None = None,
    weight_decay: float = 0.0,
    trust_ratio: float | None = 2000.0,
    aux_warmup_steps: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """FishLeg direction ``m <- momentum * m + Q g`` with ``Q = q_scale * Q(lam)`` learned online.

  Every aux step (one Fisher product on the aux batch) first sets the trust-ratio scale
  ``q_scale = min(1, trust_ratio * t)``, ``t`` the aux loss's minimiser over multiples of
  ``Q(lam)`` for this probe (:func:`fishleg_fitted_scale`, closed form, from the same Fisher
  product), then takes one aux-optimizer step on lam at that scale (module docstring). At the
  first aux step this is the scale-aware warm start
  ``Q_0 = min(1 / damping, trust_ratio / (u^T F u + damping)) I``; later it shrinks Q as soon as
  the Fisher along the gradient outgrows it (where a fixed ``Q_0`` would diverge,
  docs/optim.md) and lets it back to ``Q(lam)`` when it no longer does.

  Args:
    damping: ``gamma`` in ``Q ~ (F + gamma I)^{-1}``, in the loss's units (Q <= 1 / gamma; for a
      loss summed over ``D`` outputs use ``D`` times the damping of the per-output mean).
    aux_learning_rate: rate of the default aux optimizer (plain Adam on the factors,
      :func:`default_aux_optimizer`; the official code's 1e-4).
    update_aux_every: one aux step every this many updates (at counts 0, k, 2k, ...), unless
      ``update`` gets ``update_aux``.
    aux_warmup_steps: an aux step at every one of the first this many updates as well (then
      every ``update_aux_every``): early in training the Fisher grows fastest and Q is furthest
      from it, so that Q (and the trust-ratio scale) keep up (:func:`fishleg_aux_due`).
    momentum: heavy-ball coefficient on ``Q g`` (0 disables it).
    init_scale: ``s`` in ``Q(lam)_0 = s I``, held in the factors; ``None`` (default):
      ``1 / damping``, as in the official code. With ``trust_ratio=None`` the first step is
      SGD with rate ``learning_rate * s``.
    probe: ``"gradient"`` (u = normalised gradient: Q accurate on the gradient subspace, for
      optimisation) or ``"gaussian"`` (isotropic probes: Q approximates all of
      ``F_gamma^{-1}``, for pruning); both unit-normalised. Gaussian probes in an optimizer
      let Q grow towards ``1 / damping`` in the flat directions, a step of
      ``learning_rate / damping`` there: at damping 0.5 that diverged on the MNIST
      autoencoder (experiments/README.md, FishLeg tuning pilots).
    precondition_aux: use ``Q r`` instead of ``r`` in the aux gradient (docs/optim.md).
    q_family: ``"kronecker"``, ``"kronecker_per_example"``, ``"diagonal"`` or ``"full"`` (see
      :mod:`gnrev.optim.q_blocks`).
    aux_optimizer: overrides ``default_aux_optimizer(aux_learning_rate)`` for lam.
    weight_decay: decoupled L2 coefficient added to the direction (``m + weight_decay * theta``;
      needs ``params``), inside the transform so that a skipped update is exactly zero.
    trust_ratio: the most damped Newton steps along the probe that ``Q`` may take
      (``q_scale = min(1, trust_ratio * t)`` above; the step along the gradient is then at most
      ``learning_rate * trust_ratio / (1 - momentum)`` Newton steps: 10 at the default 2000,
      learning rate 5e-4 and momentum 0.9); ``None``: ``q_scale = 1`` (the official
      algorithm). Until the first aux step ``q_scale = 1``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params=None, *,
    fvp_fn, rng=None, update_aux=None)`` needs ``fvp_fn``: ``v -> F v`` (params-shaped, without
    damping) at the current params on an auxiliary batch, called once and only on aux steps,
    and ``rng`` when ``probe="gaussian"``. ``update_aux`` overrides the schedule: ``True`` /
    ``False`` run / skip the aux step without ``lax.cond`` (``fvp_fn`` and ``rng`` may then be
    omitted on ``False`` steps), a boolean array gates it with ``lax.cond`` (see the module
    docstring for when to use which). Other extra arguments are ignored.
    The optional ``per_example`` (block name -> ``PerExample``, from
    :func:`gnrev.optim.value_grad_and_per_example` on the gradient's batch) makes the
    ``"kronecker_per_example"`` family apply Q to the gradient in factored form (same result,
    ``B (n^2 + m^2 + n m)`` instead of ``n m (n + m)`` per block), in the step and in the aux
    step's gradient probe; other families ignore it. The factored blocks read ``per_example``
    instead of their part of ``updates``, so it must factor exactly the updates this transform
    receives: chain gradient-changing transforms (clipping, scaling) after FishLeg, not
    before, or leave ``per_example`` out.

  Example:
    >>> from gnrev import curvature
    >>> apply_fn = lambda p, x: x @ p["w"]
    >>> params, x = {"w": jnp.zeros((3, 2))}, jnp.ones((4, 3))
    >>> grads = {"w": jnp.ones((3, 2))}
    >>> tx = scale_by_fishleg(damping=0.1)
    >>> state = tx.init(params)
    >>> fvp = curvature.ggn_vector_product(apply_fn, params, x, curvature.bernoulli())
    >>> direction, state = tx.update(grads, state, params, fvp_fn=fvp, rng=jax.random.key(0))
    >>> # Split schedule: two jitted programs, the aux step every 10 steps, no lax.cond.
    >>> direction, state = tx.update(grads, state, params, update_aux=False)
    >>> direction["w"].shape
    (3, 2)

  References:
    Garcia et al., "Fisher-Legendre (FishLeg) optimization of deep neural networks", ICLR 2023.
  """
  if probe not in PROBES:
    raise ValueError(f"fishleg: unknown probe {probe!r}; allowed: {PROBES}.")
  _check_positive("damping", damping, allow_zero=True)
  _check_positive("update_aux_every", update_aux_every)
  _check_positive("aux_warmup_steps", aux_warmup_steps, allow_zero=True)
  if init_scale is not None:
    _check_positive("init_scale", init_scale)
  if init_scale is None:
    init_scale = 1.0 / damping
  _check_positive("momentum", momentum, allow_zero=True)
  if trust_ratio is not None:
    _check_positive("trust_ratio", trust_ratio)
  _check_positive("weight_decay", weight_decay, allow_zero=True)
  aux_opt = (aux_optimizer if aux_optimizer is not None
             else default_aux_optimizer(aux_learning_rate))

  def init_fn(params):
    structure = q_structure(params, q_family)
    scale = init_scale
    lam = structure.lam_for_diagonal(
        jax.tree.map(lambda p: jnp.full(p.shape, scale, p.dtype), params))
    return ScaleByFishLegState(
        count=jnp.zeros([], jnp.int32), lam=lam, aux_opt_state=aux_opt.init(lam),
        momentum=jax.tree.map(jnp.zeros_like, params), aux_loss=jnp.zeros([], jnp.float32),
        q_scale=jnp.ones([], jnp.result_type(*jax.tree.leaves(params))),
        q_cache=structure.product_cache(lam), num_skipped=jnp.zeros([], jnp.int32),
        num_aux_skipped=jnp.zeros([], jnp.int32))

  def draw_probe(grads, rng, count):
    if probe == "gradient":
      return grads
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(jax.random.fold_in(rng, count), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])

  def aux_step(structure, state, u, fvp_fn, per_example):
    lam, aux_opt_state = state.lam, state.aux_opt_state
    aux_loss, lam_grad, q_scale = _aux_loss_and_gradient_cached(
        structure, lam, state.q_cache, state.q_scale, u, fvp_fn, damping, precondition_aux,
        trust_ratio, per_example)
    lam_step, new_aux_opt_state = aux_opt.update(lam_grad, aux_opt_state, lam)
    new_lam = optax.apply_updates(lam, lam_step)
    finite = (jnp.isfinite(aux_loss) & _all_finite(new_lam) & jnp.isfinite(q_scale)
              & (q_scale > 0))
    new_lam, new_aux_opt_state, aux_loss, q_scale = _keep_if_finite(
        finite, (new_lam, new_aux_opt_state, aux_loss.astype(jnp.float32), q_scale),
        (lam, aux_opt_state, state.aux_loss, state.q_scale))
    skipped = jnp.logical_not(finite).astype(jnp.int32)
    return (new_lam, new_aux_opt_state, aux_loss, q_scale, structure.product_cache(new_lam),
            skipped)

  def update_fn(updates, state, params=None, *, fvp_fn: Callable | None = None,
                rng: jax.Array | None = None, update_aux: bool | jax.Array | None = None,
                per_example: dict | None = None, **extra_args):
    del extra_args
    if update_aux is None:
      update_aux = fishleg_aux_due(state.count, update_aux_every, aux_warmup_steps)
    if not isinstance(update_aux, bool) and getattr(update_aux, "shape", None) != ():
      raise TypeError(f"fishleg update_aux must be None, a Python bool or a scalar boolean "
                      f"array; got {update_aux!r}.")
    if fvp_fn is None and update_aux is not False:
      raise TypeError("fishleg update needs the keyword argument fvp_fn (a function v -> F v "
                      "at the current params, e.g. gnrev.curvature.ggn_vector_product(...)).")
    if probe == "gaussian" and rng is None and update_aux is not False:
      raise TypeError("fishleg update with probe='gaussian' needs the keyword argument rng.")
    decays = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)
    if decays and params is None:
      raise ValueError("fishleg with weight_decay > 0 needs params in update.")
    structure = q_structure(updates, q_family)
    # The gradient probe is the gradient that per_example factors; a Gaussian one is not.
    take_aux_step = lambda: aux_step(structure, state, draw_probe(updates, rng, state.count),
                                     fvp_fn, per_example if probe == "gradient" else None)
    skip_aux_step = lambda: (state.lam, state.aux_opt_state, state.aux_loss, state.q_scale,
                             state.q_cache, jnp.zeros([], jnp.int32))
    if isinstance(update_aux, bool):
      lam, aux_opt_state, aux_loss, q_scale, q_cache, aux_skipped = (
          take_aux_step() if update_aux else skip_aux_step())
    else:
      lam, aux_opt_state, aux_loss, q_scale, q_cache, aux_skipped = jax.lax.cond(
          update_aux, take_aux_step, skip_aux_step)
    # The step uses Q after this update's aux step (its trust-ratio scale at the first one).
    direction = jax.tree.map(lambda d: (q_scale * d).astype(d.dtype),
                             structure.q_vector_cached(lam, q_cache, updates, per_example))
    trace = jax.tree.map(lambda m, d: momentum * m + d, state.momentum, direction)
    step = trace
    if decays:
      step = jax.tree.map(lambda t, p: t + weight_decay * p, trace, params)
    # A non-finite gradient or step (overflow, a NaN loss) is skipped: zero update, the state as
    # it was (momentum, Q and the aux optimizer untouched), counted in num_skipped.
    finite = _all_finite(updates) & _all_finite(step)
    new_state = ScaleByFishLegState(
        count=optax.safe_increment(state.count), lam=lam, aux_opt_state=aux_opt_state,
        momentum=trace, aux_loss=aux_loss, q_scale=q_scale, q_cache=q_cache,
        num_skipped=state.num_skipped, num_aux_skipped=state.num_aux_skipped + aux_skipped)
    new_state = _keep_if_finite(finite, new_state, state)._replace(
        num_skipped=jnp.where(finite, state.num_skipped,
                              optax.safe_increment(state.num_skipped)))
    return _keep_if_finite(finite, step, jax.tree.map(jnp.zeros_like, step)), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fishleg(
    learning_rate: optax.ScalarOrSchedule = 5e-4,
    damping: float = 0.1,
    aux_learning_rate: float = 1e-4,
    update_aux_every: int = 10,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    init_scale: float | None = None,
    probe: str = "gradient",
    precondition_aux: bool = True,
    q_family: str = "kronecker",
    aux_optimizer: optax.GradientTransformation | None = None,
    max_newton_steps: float | None = 10.0,
    aux_warmup_steps: int = 40,
) -> optax.GradientTransformationExtraArgs:
  """FishLeg optimizer: ``theta <- theta - learning_rate * (m + weight_decay * theta)``.

  ``m`` is the momentum trace of ``Q g`` from :func:`scale_by_fishleg` (see it for the other
  arguments); weight decay is added to the step, not to ``m``, as in the official code.

  The arguments ``damping``, ``aux_learning_rate``, ``update_aux_every``, ``momentum``,
  ``init_scale``, ``probe``, ``precondition_aux``, ``q_family``, ``aux_optimizer`` and
  ``aux_warmup_steps`` are as in :func:`scale_by_fishleg` (here an aux step at each of the first
  40 updates by default: with aux steps every 10 from the start, the defaults diverged between
  steps 20 and 30 on seed 1 of flax's init of the MNIST autoencoder, docs/optim.md).

  Args:
    learning_rate: step size (float or optax schedule); the default 5e-4 is the official
      example's 0.005 on an EMA momentum (heavy-ball trace here: ``1 / (1 - momentum)`` larger
      steady step).
    weight_decay: decoupled L2 coefficient added to the step.
    max_newton_steps: the most damped Newton steps along the gradient that one step's steady
      momentum may take: :func:`scale_by_fishleg`'s ``trust_ratio`` is
      ``max_newton_steps * (1 - momentum) / learning_rate`` (2000 at the defaults; a schedule's
      value at step 0). ``None`` (or a schedule starting at 0): no guard.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``fvp_fn=`` (and ``rng=``
    for Gaussian probes) and ignores other keyword arguments. A non-finite gradient or step
    gives a zero update with the state unchanged, counted in ``state[0].num_skipped``.

  Example:
    >>> params = {"w": jnp.ones(3)}
    >>> fvp = lambda v: v                                   # F = I, for the example
    >>> tx = fishleg(0.05, damping=0.25, max_newton_steps=0.1)   # trust ratio 0.1 * 0.1 / 0.05
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params, fvp_fn=fvp, rng=jax.random.key(0))
    >>> # Q_0 = min(1 / 0.25, 0.2 / (u^T F u + 0.25)) I = 0.16 I (u = g / |g|, F = I)
    >>> [round(u, 4) for u in updates["w"].tolist()]
    [-0.008, -0.008, -0.008]
  """
  trust_ratio = None
  if max_newton_steps is not None:
    _check_positive("max_newton_steps", max_newton_steps)
    initial_rate = learning_rate(0) if callable(learning_rate) else learning_rate
    # An array division (inject_hyperparams passes arrays): a zero initial rate gives an
    # infinite ratio, i.e. no guard.
    trust_ratio = max_newton_steps * (1 - momentum) / jnp.asarray(initial_rate, jnp.float32)
  return optax.chain(
      scale_by_fishleg(damping, aux_learning_rate, update_aux_every, momentum, init_scale, probe,
                       precondition_aux, q_family, aux_optimizer, weight_decay=weight_decay,
                       trust_ratio=trust_ratio, aux_warmup_steps=aux_warmup_steps),
      optax.scale_by_learning_rate(learning_rate),
  )


def fishleg_official(
    learning_rate: float = 0.005,
    damping: float = 0.1,
    aux_learning_rate: float = 1e-4,
    update_aux_every: int = 10,
    momentum: float = 0.9,
    weight_decay: float = 1e-5,
) -> optax.GradientTransformationExtraArgs:
  """The official FishLeg code's MNIST-autoencoder settings, as a preset of :func:`fishleg`.

  The official PyTorch optimizer's example: learning rate 0.005 on an EMA momentum
  ``m <- 0.9 m + 0.1 Q g``, damping 0.1, ``Q_0 = I / damping`` (never rescaled), Adam on the
  factors at 1e-4, one aux step every 10, preconditioned aux gradient, weight decay 1e-5.
  ``learning_rate`` is in the official EMA units and becomes ``learning_rate * (1 - momentum)``
  on :func:`fishleg`'s heavy-ball trace (the same steps). No guard: a fixed ``Q_0`` is
  SGD-momentum at ``learning_rate / damping`` until Adam has shrunk Q, which diverges where the
  Fisher is large for that rate (a loss scaled by 10 on a small autoencoder, docs/optim.md).
  """
  return fishleg(learning_rate * (1 - momentum), damping=damping,
                 aux_learning_rate=aux_learning_rate, update_aux_every=update_aux_every,
                 momentum=momentum, weight_decay=weight_decay, init_scale=1 / damping,
                 max_newton_steps=None, aux_warmup_steps=0)


def _is_fishleg_state(x) -> bool:
  return isinstance(x, ScaleByFishLegState)


def _fishleg_state(state) -> ScaleByFishLegState:
  found = [s for s in jax.tree.leaves(state, is_leaf=_is_fishleg_state) if _is_fishleg_state(s)]
  if len(found) != 1:
    raise ValueError(f"Expected an optimizer state holding exactly one ScaleByFishLegState "
                     f"(FishLeg alone, in a chain or inject_hyperparams); found {len(found)}.")
  return found[0]


def _structure(fishleg_state: ScaleByFishLegState):
  return q_structure(fishleg_state.momentum, q_family_of(fishleg_state.lam))


def fishleg_q_vector(state, v: PyTree) -> PyTree:
  """``Q(lam) v``: the learned ``(F + gamma I)^{-1}`` applied to a params-shaped ``v``.

  Args:
    state: FishLeg's state, alone or inside a chain / ``inject_hyperparams`` state.
    v: params-shaped tree.
  """
  fishleg_state = _fishleg_state(state)
  return jax.tree.map(lambda x: (fishleg_state.q_scale * x).astype(x.dtype),
                      _structure(fishleg_state).q_vector(fishleg_state.lam, v))


def fishleg_diagonal(state) -> PyTree:
  """``diag(Q(lam))`` in closed form, params-shaped (FishLeg Surgeon's ``[F^{-1}]_qq``)."""
  fishleg_state = _fishleg_state(state)
  return jax.tree.map(lambda x: (fishleg_state.q_scale * x).astype(x.dtype),
                      _structure(fishleg_state).diagonal(fishleg_state.lam,
                                                         fishleg_state.momentum))


def fishleg_warm_start(state, mean_squared_grads: PyTree, damping: float):
  """Diagonal warm start ``diag(Q_0) = 1 / (E[g^2] + damping)`` (off-diagonal factors identity).

  Args:
    state: FishLeg's state, alone or nested; every FishLeg state inside is warm-started.
    mean_squared_grads: params-shaped ``E[g^2]`` (mean of squared minibatch gradients).
    damping: ``gamma``, > 0 where some ``E[g^2]`` may vanish.

  Returns:
    The same state with lam replaced.
  """
  target = jax.tree.map(lambda s: 1.0 / (s + damping), mean_squared_grads)

  def warm(s):
    if not _is_fishleg_state(s):
      return s
    return fishleg_set_lam(s, _structure(s).lam_for_diagonal(target))

  return jax.tree.map(warm, state, is_leaf=_is_fishleg_state)


def fishleg_set_lam(state, lam: dict):
  """The state with FishLeg's Q factors replaced by ``lam`` and its product cache rebuilt.

  Args:
    state: FishLeg's state, alone or inside a chain / ``inject_hyperparams`` state (exactly one
      FishLeg state inside).
    lam: factors with the structure of the state's ``lam`` (e.g. edited, or from another run).

  Returns:
    The same state with ``lam`` and ``q_cache`` replaced and ``q_scale`` reset to 1 (so that
    ``Q = Q(lam)``); the aux optimizer's state is kept. With a trust ratio, the next aux step
    sets the scale again.
  """
  fishleg_state = _fishleg_state(state)
  if jax.tree.structure(lam) != jax.tree.structure(fishleg_state.lam):
    raise ValueError(f"fishleg_set_lam: lam must have the structure of the state's lam "
                     f"{jax.tree.structure(fishleg_state.lam)}; got {jax.tree.structure(lam)}.")
  structure = _structure(fishleg_state)
  replaced = fishleg_state._replace(lam=lam, q_cache=structure.product_cache(lam),
                                    q_scale=jnp.ones_like(fishleg_state.q_scale))
  return jax.tree.map(lambda s: replaced if _is_fishleg_state(s) else s, state,
                      is_leaf=_is_fishleg_state)
