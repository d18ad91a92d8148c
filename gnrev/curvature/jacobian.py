"""Matrix-free products with the Jacobian of a model's outputs with respect to its params.

For ``f(params) = apply_fn(params, x)`` with outputs of shape ``(n, c)`` and ``J = df/dparams``:

* :func:`output_jvp`: ``J v`` (a params-shaped tangent to an output-shaped array), one jvp;
* :func:`output_vjp`: ``J^T u`` (an output-shaped cotangent to a params-shaped array), one vjp;
* :func:`linearize_output`: both, with the forward pass done once (for iterative solvers), from
  reverse mode only, so it also serves models whose backward is a ``jax.custom_vjp``;
* :func:`gram_vector_product`: ``J J^T u`` (the empirical NTK times ``u``), one vjp and one jvp;
* :func:`dense_jacobian`: the materialised ``(n c) x p`` matrix, for tiny models and tests.

:func:`output_jvp`, :func:`gram_vector_product` and :func:`dense_jacobian` differentiate
``apply_fn(params, x)`` in forward mode (for a :class:`gnrev.nets.RevMLP` use
``memory_mode="autodiff"``); :func:`linearize_output` and :func:`output_vjp` need reverse mode only
(any ``memory_mode``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.flatten_util import ravel_pytree

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def output_jvp(apply_fn: ApplyFn, params: Any, x: jax.Array, tangent: Any) -> jax.Array:
  """``J v``: the first-order change of ``apply_fn(params, x)`` as params move along ``tangent``."""
  return jax.jvp(lambda p: apply_fn(p, x), (params,), (tangent,))[1]


def output_vjp(apply_fn: ApplyFn, params: Any, x: jax.Array, cotangent: jax.Array) -> Any:
  """``J^T u``: pulls an output-shaped ``cotangent`` back to a params-shaped pytree."""
  _, vjp_fn = jax.vjp(lambda p: apply_fn(p, x), params)
  return vjp_fn(cotangent)[0]


def linearize_output(apply_fn: ApplyFn, params: Any, x: jax.Array):
  """Linearises ``params -> apply_fn(params, x)`` once, in reverse mode.

  ``vjp_fn`` is ``jax.vjp``'s pullback and ``jvp_fn`` its transpose (``J v = (J^T)^T v``), so only
  reverse-mode differentiation is needed: a model whose backward is a ``jax.custom_vjp`` (a RevMLP
  with ``memory_mode="invert"`` rebuilding block inputs by inversion) linearises as well as a
  plain one, and keeps only what its own backward keeps.

  Returns:
    ``(outputs, jvp_fn, vjp_fn)`` with ``jvp_fn(v) = J v`` and ``vjp_fn(u) = J^T u``; both reuse
    the forward pass, so repeated products (conjugate gradients) cost no further forward passes.
  """
  outputs, pullback = jax.vjp(lambda p: apply_fn(p, x), params)
  vjp_fn = lambda cotangent: pullback(cotangent)[0]
  transpose = jax.linear_transpose(vjp_fn, outputs)
  return outputs, lambda tangent: transpose(tangent)[0], vjp_fn


def gram_vector_product(apply_fn: ApplyFn, params: Any, x: jax.Array,
                        vector: jax.Array) -> jax.Array:
  """``J J^T u`` for an output-shaped ``u``: one vjp followed by one jvp."""
  return output_jvp(apply_fn, params, x, output_vjp(apply_fn, params, x, vector))


def dense_jacobian(apply_fn: ApplyFn, params: Any, x: jax.Array):
  """The Jacobian of the flattened outputs with respect to the flattened params (``jax.jacfwd``).

  Returns:
    ``(jacobian, unravel)``: a ``(outputs.size, num_params)`` matrix and the function that maps a
    flat params vector back to the params pytree. Memory is ``O(outputs.size * num_params)``: tiny
    models only.
  """
  flat, unravel = ravel_pytree(params)
  jacobian = jax.jacfwd(lambda v: apply_fn(unravel(v), x).reshape(-1))(flat)
  return jacobian, unravel
