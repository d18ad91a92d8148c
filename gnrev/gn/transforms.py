"""optax transforms for the exact (RevMLP) and the min-norm (any model) Gauss-Newton steps.

Both compute their direction from the batch, not from the incoming gradient (which only fixes
the structure of the update), so they are ``GradientTransformationExtraArgs`` that take the batch
as the keyword-only extra argument ``batch=(x, y)``; unknown extra arguments are ignored, so they
compose with ``optax.chain`` and ``optax.inject_hyperparams``. Following optax, ``scale_by_*``
returns a gradient-like direction (``-D``) that ``scale_by_learning_rate`` turns into ``eta D``.
A direction with a non-finite entry is never applied: the update is zero and the state counts it
(``num_skipped``), keeping the last finite direction's norm.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from gnrev.curvature import EXACT_PRECISION, PrecisionLike, check_precision
from gnrev.gn.min_norm import min_norm_gn_direction
from gnrev.gn.sweep import exact_gn_direction
from gnrev.nets import RevMLP


class GNState(NamedTuple):
  """State of :func:`scale_by_exact_gn` and :func:`scale_by_gauss_newton`."""
  count: jax.Array                # int32 (): steps taken
  num_skipped: jax.Array          # int32 (): steps whose direction was not finite (zero update)
  last_finite: jax.Array          # bool (): whether the last direction was finite
  last_direction_norm: jax.Array  # float32 (): global norm of the last finite direction D


def _gauss_newton_transform(direction_fn: Callable, name: str,
                            ) -> optax.GradientTransformationExtraArgs:
  """Wraps ``direction_fn(params, x, y, extra_args) -> (D, info)`` as an optax transform."""

  def init_fn(params):
    del params
    return GNState(count=jnp.zeros([], jnp.int32), num_skipped=jnp.zeros([], jnp.int32),
                   last_finite=jnp.ones([], jnp.bool_),
                   last_direction_norm=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, *, batch=None, **extra_args):
    if params is None:
      raise TypeError(f"{name}.update needs params (the current parameters).")
    if batch is None:
      raise TypeError(f"{name}.update needs the keyword argument batch=(x, y): the Gauss-Newton "
                      "direction is computed from the batch, not from the gradient.")
    x, y = batch
    direction, info = direction_fn(params, x, y, extra_args)
    finite = info["finite"]
    updates = jax.tree.map(lambda d, u: jnp.where(finite, -d, 0).astype(u.dtype), direction,
                           updates)
    return updates, GNState(
        count=optax.safe_increment(state.count),
        num_skipped=state.num_skipped + jnp.logical_not(finite).astype(jnp.int32),
        last_finite=finite,
        # A skipped step keeps the previous norm: the state stays finite, num_skipped counts it.
        last_direction_norm=jnp.where(finite, info["direction_norm"].astype(jnp.float32),
                                      state.last_direction_norm))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_exact_gn(model, loss: str = "ce_identity",
                      allocation: Union[str, Sequence[float]] = "full", solver: str = "cholesky",
                      rtol=0.0, atol=0.0, damping=0.0, keep_activations: bool = True,
                      precision: PrecisionLike = EXACT_PRECISION,
                      ) -> optax.GradientTransformationExtraArgs:
  """The exact Gauss-Newton direction of a RevMLP (:func:`gnrev.gn.exact_gn_direction`).

  ``update(updates, state, params, *, batch=(x, y), fixed=variables["fixed"])``: ``batch`` and
  ``fixed`` are required keyword arguments; others are ignored.

  Args:
    model: the :class:`gnrev.nets.RevMLP` whose ``params`` are optimised.
    loss, allocation, solver, rtol, atol, damping, keep_activations, precision: as in
      :func:`gnrev.gn.exact_gn_direction` (``precision`` is checked here, at construction).

  Returns:
    A ``GradientTransformationExtraArgs`` with state :class:`GNState`.

  Example:
    >>> from gnrev import nets
    >>> x, y = jax.random.normal(jax.random.key(0), (4, 8)), jnp.arange(4) % 2
    >>> model = nets.RevMLP(num_blocks=1, expansion=8, num_classes=2)
    >>> variables = model.init(jax.random.key(1), x)
    >>> grads = jax.tree.map(jnp.zeros_like, variables["params"])   # not used by GN
    >>> tx = optax.chain(scale_by_exact_gn(model), optax.scale_by_learning_rate(0.1))
    >>> state = tx.init(variables["params"])
    >>> updates, state = tx.update(grads, state, variables["params"], batch=(x, y),
    ...                            fixed=variables["fixed"])

  References:
    Buffelli, McGowan et al., NeurIPS 2024 (arXiv 2411.07979).
  """
  check_precision(precision)

  if not isinstance(model, RevMLP):
    raise TypeError(
        f"exact_gn needs a gnrev.nets.RevMLP (its sweep solves the coupling blocks one by one), "
        f"got {type(model).__name__}. For any other model use gn.gauss_newton(learning_rate, "
        "apply_fn=lambda params, x: model.apply({'params': params}, x)), the matrix-free "
        "min-norm step.")

  def direction_fn(params, x, y, extra_args):
    fixed = extra_args.get("fixed")
    if fixed is None:
      raise TypeError("scale_by_exact_gn.update needs the keyword argument "
                      "fixed=variables['fixed'] (the RevMLP's fixed expansions and head).")
    return exact_gn_direction(model, {"params": params, "fixed": fixed}, x, y, loss=loss,
                              allocation=allocation, solver=solver, rtol=rtol, atol=atol,
                              damping=damping, keep_activations=keep_activations,
                              diagnostics=False, precision=precision)

  return _gauss_newton_transform(direction_fn, "scale_by_exact_gn")


def exact_gn(learning_rate: optax.ScalarOrSchedule, model, loss: str = "ce_identity",
             allocation: Union[str, Sequence[float]] = "full", solver: str = "cholesky",
             rtol=0.0, atol=0.0, damping=0.0, keep_activations: bool = True,
             precision: PrecisionLike = EXACT_PRECISION,
             ) -> optax.GradientTransformationExtraArgs:
  """Exact Gauss-Newton for a RevMLP: ``params <- params + learning_rate * D``.

  With ``inject_hyperparams`` name the model static (it is callable, so optax would take it for
  a schedule and call it with the step count):
  ``optax.inject_hyperparams(gn.exact_gn, static_args=("model",))(0.1, model=model)``.

  Example:
    >>> from gnrev import nets
    >>> x, y = jax.random.normal(jax.random.key(0), (4, 8)), jnp.arange(4) % 2
    >>> model = nets.RevMLP(num_blocks=1, expansion=8, num_classes=2)
    >>> variables = model.init(jax.random.key(1), x)
    >>> grads = jax.tree.map(jnp.zeros_like, variables["params"])   # not used by GN
    >>> tx = exact_gn(0.1, model=model, loss="ce_identity")
    >>> state = tx.init(variables["params"])
    >>> updates, state = tx.update(grads, state, variables["params"], batch=(x, y),
    ...                            fixed=variables["fixed"])
    >>> params = optax.apply_updates(variables["params"], updates)
  """
  return optax.chain(
      scale_by_exact_gn(model, loss=loss, allocation=allocation, solver=solver, rtol=rtol,
                        atol=atol, damping=damping, keep_activations=keep_activations,
                        precision=precision),
      optax.scale_by_learning_rate(learning_rate))


def scale_by_gauss_newton(apply_fn: Callable[[Any, jax.Array], jax.Array], loss: str = "mse",
                          damping=0.0, maxiter: Optional[int] = None, tol=1e-6,
                          ) -> optax.GradientTransformationExtraArgs:
  """The min-norm Gauss-Newton direction of any model (:func:`gnrev.gn.min_norm_gn_direction`).

  ``update(updates, state, params, *, batch=(x, y), fixed=None)``; other extra arguments are
  ignored. ``apply_fn(params, x)`` gives the model's outputs; a model with variables that are not
  trained (a RevMLP's expansions and head, batch statistics) takes them as a third argument,
  ``apply_fn(params, x, fixed)``, and the update is then given ``fixed=...``. Passing them as an
  argument rather than closing over them keeps them out of the compiled constants.

  Example:
    >>> apply_fn = lambda p, x: x @ p["w"]
    >>> params, x, y = {"w": jnp.zeros((3, 1))}, jnp.eye(3), jnp.ones((3, 1))
    >>> tx = optax.chain(scale_by_gauss_newton(apply_fn, damping=1e-3),
    ...                  optax.scale_by_learning_rate(1.0))
    >>> updates, _ = tx.update(params, tx.init(params), params, batch=(x, y))
    >>> [round(u, 2) for u in updates["w"].ravel().tolist()]  # one step solves the problem
    [1.0, 1.0, 1.0]
  """

  def direction_fn(params, x, y, extra_args):
    fixed = extra_args.get("fixed")
    model_fn = apply_fn if fixed is None else (lambda p, inputs: apply_fn(p, inputs, fixed))
    return min_norm_gn_direction(model_fn, params, x, y, loss=loss, damping=damping,
                                 maxiter=maxiter, tol=tol)

  return _gauss_newton_transform(direction_fn, "scale_by_gauss_newton")


def gauss_newton(learning_rate: optax.ScalarOrSchedule,
                 apply_fn: Callable[[Any, jax.Array], jax.Array], loss: str = "mse",
                 damping=0.0, maxiter: Optional[int] = None, tol=1e-6,
                 ) -> optax.GradientTransformationExtraArgs:
  """Min-norm (damped) Gauss-Newton for any model: ``params <- params + learning_rate * D``.

  With ``inject_hyperparams`` pass ``static_args=("apply_fn",)``: optax takes every callable
  argument for a schedule and calls it with the step count before this factory runs (a
  ``TypeError`` from ``apply_fn`` about a missing argument means ``static_args`` was left out).

  Example:
    >>> apply_fn = lambda p, x: x @ p["w"]
    >>> params, x, y = {"w": jnp.zeros((3, 1))}, jnp.eye(3), jnp.ones((3, 1))
    >>> tx = gauss_newton(1.0, apply_fn=apply_fn, loss="mse", damping=1e-4)
    >>> updates, state = tx.update(params, tx.init(params), params, batch=(x, y))
  """
  return optax.chain(
      scale_by_gauss_newton(apply_fn, loss=loss, damping=damping, maxiter=maxiter, tol=tol),
      optax.scale_by_learning_rate(learning_rate))
