"""The Moore-Penrose (min-norm) Gauss-Newton step for any model, matrix-free and dense.

With the output-space Newton target ``t = -H^+ g`` (:mod:`gnrev.gn.targets`), the min-norm step
that realises it is ``D = J^+ t = J^T (J J^T)^{-1} t``: solve ``(J J^T + damping I) alpha = t`` in
output space (``n c`` unknowns) and pull ``alpha`` back with one vjp. For ``"mse"`` and
``"ce_identity"`` (``H = I``) and ``damping = 0`` this is exactly ``-(J^T H J)^+ J^T g``. It is
the step the exact RevMLP sweep (:func:`gnrev.gn.exact_gn_direction`) is compared with.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from gnrev.curvature import (EXACT_PRECISION, PrecisionLike, dense_jacobian, linearize_output,
                             matmul_precision)
from gnrev.gn.diagnostics import direction_summary, relative_error
from gnrev.gn.targets import newton_target


def min_norm_gn_direction(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                          x: jax.Array, y: jax.Array, loss: str = "mse", damping=0.0,
                          maxiter: Optional[int] = None, tol=1e-6):
  """Min-norm Gauss-Newton direction by conjugate gradients on ``J J^T`` (one vjp + one jvp each).

  Args:
    apply_fn: ``apply_fn(params, x) -> logits (n, c)``, differentiable in reverse mode (the
      products come from ``jax.vjp`` and its transpose, so a RevMLP in any ``memory_mode``,
      ``"invert"``'s ``custom_vjp`` included, works).
    params: the trained parameters.
    x: inputs of the batch.
    y: integer labels ``(n,)`` or float targets ``(n, c)``.
    loss: ``"mse"``, ``"ce"`` or ``"ce_identity"`` (see :mod:`gnrev.gn.targets`).
    damping: ``lambda`` in ``(J J^T + lambda I) alpha = t`` (0: the exact pseudo-inverse;
      ``J J^T`` must then be non-singular on the target, e.g. ``J`` of full row rank).
    maxiter: conjugate-gradient iterations (default: ``n c``, the output-space dimension).
    tol: relative residual tolerance of conjugate gradients.

  Returns:
    ``(direction, info)``: a descent step shaped like ``params`` (``J D ~= t``) and ``info`` with
    ``finite``, ``direction_norm`` and ``residual`` (``||J J^T alpha + lambda alpha - t|| / ||t||``,
    conjugate gradients' own residual).

  Example:
    >>> apply_fn = lambda p, x: x @ p["w"]
    >>> params, x, y = {"w": jnp.zeros((3, 1))}, jnp.eye(3), jnp.ones((3, 1))
    >>> direction, info = min_norm_gn_direction(apply_fn, params, x, y, loss="mse")
    >>> params = jax.tree.map(lambda p, d: p + d, params, direction)   # one Gauss-Newton step
    >>> [round(w, 4) for w in params["w"].ravel().tolist()]
    [1.0, 1.0, 1.0]
  """
  logits, jvp_fn, vjp_fn = linearize_output(apply_fn, params, x)
  target = newton_target(loss, logits, y)
  operator = lambda alpha: jvp_fn(vjp_fn(alpha)) + damping * alpha
  alpha, _ = jax.scipy.sparse.linalg.cg(operator, target, tol=tol, maxiter=maxiter)
  direction = vjp_fn(alpha)
  info = {**direction_summary(direction), "residual": relative_error(operator(alpha), target)}
  return direction, info


def dense_gn_direction(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                       x: jax.Array, y: jax.Array, loss: str = "mse", *,
                       precision: PrecisionLike = EXACT_PRECISION):
  """Min-norm Gauss-Newton direction from the materialised Jacobian: ``lstsq(J, t)``.

  For tiny models and tests (``J`` is ``(n c) x p``, built with ``jax.jacfwd``). Same step as
  :func:`min_norm_gn_direction` with ``damping = 0``; if ``J`` is rank deficient, ``J D`` is the
  projection of ``t`` onto the range of ``J``. A reference, so its products (the model's forward
  pass and the Jacobian's) run at ``precision`` (:func:`gnrev.curvature.matmul_precision`).

  Returns:
    The direction, shaped like ``params``.
  """
  with matmul_precision(precision):
    return _dense_gn_direction(apply_fn, params, x, y, loss)


def _dense_gn_direction(apply_fn, params, x, y, loss):
  logits = apply_fn(params, x)
  jacobian, unravel = dense_jacobian(apply_fn, params, x)
  flat = jnp.linalg.lstsq(jacobian, newton_target(loss, logits, y).reshape(-1))[0]
  return unravel(flat)
