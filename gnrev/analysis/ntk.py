"""Empirical neural tangent kernel, its change during training, and a cheap sketch of it.

The empirical NTK of a model ``f(params, x)`` with output ``(n, *out)`` is

.. math::

    \\Theta(x_1, x_2) = J(x_1) J(x_2)^\\top, \\qquad J(x) = \\partial f(\\theta, x) / \\partial \\theta,

a matrix over (example, output) pairs. Arguments and output layout follow neural-tangents'
``empirical_ntk_fn`` (which gnrev does not depend on; see docs/analysis.md).

Kernels are compared to 1e-6, so every function here takes a keyword ``precision``
(``"highest"`` by default, :func:`gnrev.curvature.matmul_precision`) for all its matrix
products, those of the model's forward pass, JVPs and VJPs included: with TF32 products (JAX's
default on recent NVIDIA GPUs) the Jacobian itself is off by about 1e-3 (docs/precision.md).

References:
  Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018.
  Fort et al., "Deep learning versus kernel learning: an empirical study of loss landscape
  geometry and the time evolution of the Neural Tangent Kernel", NeurIPS 2020.
  Buffelli, McGowan et al., NeurIPS 2024 (NTK similarity to initialisation, exact_gn notes 2.2).
"""

from __future__ import annotations

import string
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from gnrev.curvature import (EXACT_PRECISION, PrecisionLike, check_precision,
                             matmul_precision)

IMPLEMENTATIONS = ("jacobian", "vector_products")
SKETCH_ESTIMATORS = ("paper", "frobenius")


def _normalise_trace_axes(trace_axes: Sequence[int], ndim: int) -> tuple[int, ...]:
  """Output axes (positive, >= 1) to trace over; the batch axis 0 cannot be traced."""
  axes = []
  for axis in trace_axes:
    if not -ndim <= axis < ndim:
      raise ValueError(f"trace_axes entry {axis} is out of range for an output of rank {ndim}.")
    axis = axis % ndim
    if axis == 0:
      raise ValueError("trace_axes may not contain the batch axis 0; allowed: output axes "
                       f"1..{ndim - 1} (or negative indices).")
    axes.append(axis)
  if len(set(axes)) != len(axes):
    raise ValueError(f"trace_axes {tuple(trace_axes)} names an axis twice.")
  return tuple(sorted(axes))


def _contract_output_axes(full: jax.Array, ndim: int, trace_axes: tuple[int, ...]) -> jax.Array:
  """Traces ``full`` of shape ``(n1, *out, n2, *out)`` over ``trace_axes``.

  The remaining output axes come interleaved after ``(n1, n2)``, as in neural-tangents:
  ``(n1, n2, o1, o1', o2, o2', ...)``.
  """
  letters = iter(string.ascii_letters)
  left = [next(letters) for _ in range(ndim)]
  right = [left[a] if a in trace_axes else next(letters) for a in range(ndim)]
  right[0] = next(letters)
  kept = [a for a in range(1, ndim) if a not in trace_axes]
  result = [left[0], right[0]] + [c for a in kept for c in (left[a], right[a])]
  return jnp.einsum(f"{''.join(left)}{''.join(right)}->{''.join(result)}", full)


def _full_ntk_jacobian(apply_fn, params, x1, x2):
  def flat_jacobian(x):
    out_shape = jax.eval_shape(apply_fn, params, x).shape
    jac = jax.jacrev(apply_fn)(params, x)
    leaves = [leaf.reshape(out_shape + (-1,)) for leaf in jax.tree.leaves(jac)]
    return jnp.concatenate(leaves, axis=-1)
  j1 = flat_jacobian(x1)
  j2 = j1 if x2 is x1 else flat_jacobian(x2)
  return jnp.tensordot(j1, j2, axes=((-1,), (-1,)))


def _full_ntk_vector_products(apply_fn, params, x1, x2):
  out2, vjp_fn = jax.vjp(lambda p: apply_fn(p, x2), params)
  basis = jnp.eye(out2.size, dtype=out2.dtype).reshape((out2.size,) + out2.shape)
  pulled_back = jax.vmap(lambda e: vjp_fn(e)[0])(basis)
  pushed = jax.vmap(lambda t: jax.jvp(lambda p: apply_fn(p, x1), (params,), (t,))[1])(pulled_back)
  # pushed: (n2 * out2, n1, *out1) -> (n1, *out1, n2, *out2)
  pushed = jnp.moveaxis(pushed, 0, -1)
  return pushed.reshape(pushed.shape[:-1] + out2.shape)


def empirical_ntk(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, x1: jax.Array,
                  x2: Optional[jax.Array] = None, trace_axes: Sequence[int] = (-1,),
                  implementation: str = "jacobian", *,
                  precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Empirical NTK ``J(x1) J(x2)^T`` of any ``apply_fn(params, x)``.

  Args:
    apply_fn: model function returning an output of shape ``(n, *out)`` (e.g. flax
      ``lambda p, x: model.apply({'params': p, 'fixed': fixed}, x)``).
    params: parameter pytree to differentiate with respect to.
    x1: inputs ``(n1, ...)``.
    x2: inputs ``(n2, ...)``; ``None`` means ``x1``.
    trace_axes: output axes summed over (neural-tangents' convention; ``(-1,)`` traces the
      logits, ``()`` keeps the per-output kernel). The batch axis cannot be traced.
    implementation: ``"jacobian"`` (contract two materialised Jacobians; the reliable
      default) or ``"vector_products"`` (VJP of each output basis vector at ``x2``, then JVP at
      ``x1``; never materialises a Jacobian of ``x1``). It needs forward mode, so a RevMLP must
      use ``memory_mode="autodiff"`` (the ``custom_vjp`` modes have no JVP).
    precision: of every product, the model's included (module docstring).

  Returns:
    The kernel, shape ``(n1, n2)`` plus the untraced output axes interleaved:
    ``(n1, n2, c, c)`` for a ``(n, c)`` output with ``trace_axes=()``.

  Example:
    >>> model_fn = lambda p, x: jnp.tanh(x @ p["w"])
    >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
    >>> x_probe = jax.random.normal(jax.random.key(1), (5, 4))
    >>> empirical_ntk(model_fn, params, x_probe).shape                   # (n, n)
    (5, 5)
    >>> empirical_ntk(model_fn, params, x_probe, trace_axes=()).shape    # (n, n, c, c)
    (5, 5, 3, 3)
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {implementation!r}; allowed: {IMPLEMENTATIONS}.")
  x2 = x1 if x2 is None else x2
  out1 = jax.eval_shape(apply_fn, params, x1)
  out2 = jax.eval_shape(apply_fn, params, x2)
  if out1.ndim < 1 or out1.shape[1:] != out2.shape[1:]:
    raise ValueError("apply_fn must return (n, *out) with the same *out for x1 and x2; got "
                     f"{out1.shape} and {out2.shape}.")
  axes = _normalise_trace_axes(trace_axes, out1.ndim)
  full_fn = _full_ntk_jacobian if implementation == "jacobian" else _full_ntk_vector_products
  with matmul_precision(precision):
    return _contract_output_axes(full_fn(apply_fn, params, x1, x2), out1.ndim, axes)


def kernel_distance(kernel_1: jax.Array, kernel_2: jax.Array, *,
                    precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Fort et al.'s kernel distance ``1 - <K1, K2>_F / (||K1||_F ||K2||_F)``.

  Zero for kernels equal up to a positive scale, one for orthogonal kernels.

  Args:
    kernel_1: a kernel, any shape (e.g. from :func:`empirical_ntk` on a fixed probe set).
    kernel_2: a kernel of the same shape.
    precision: of the inner product ``<K1, K2>_F``.

  Returns:
    Scalar distance in ``[0, 2]``.

  References:
    Fort et al., NeurIPS 2020, section 4 (kernel distance S(t, t')).
  """
  if kernel_1.shape != kernel_2.shape:
    raise ValueError(f"Kernel shapes differ: {kernel_1.shape} vs {kernel_2.shape}.")
  inner = jnp.vdot(kernel_1, kernel_2, precision=check_precision(precision))
  return 1.0 - inner / (jnp.linalg.norm(kernel_1) * jnp.linalg.norm(kernel_2))


def kernel_velocity(kernel_t: jax.Array, kernel_later: jax.Array, dt: float, *,
                    precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Fort et al.'s kernel velocity ``S(t, t + dt) / dt`` (kernel distance per unit time).

  Args:
    kernel_t: kernel at time ``t``.
    kernel_later: kernel at time ``t + dt`` on the same probe inputs.
    dt: elapsed time (steps or epochs, as the caller counts), positive.
    precision: as in :func:`kernel_distance`.

  Returns:
    Scalar velocity.
  """
  if not dt > 0:
    raise ValueError(f"dt must be positive; got {dt}.")
  return kernel_distance(kernel_t, kernel_later, precision=precision) / dt


def _ntk_probe_products(apply_fn, params, x, probes):
  """``Theta v = J (J^T v)`` for each probe ``v`` (VJP then JVP), flattened: ``(P, n * out)``."""
  _, vjp_fn = jax.vjp(lambda p: apply_fn(p, x), params)

  def product(v):
    tangent = vjp_fn(v)[0]
    return jax.jvp(lambda p: apply_fn(p, x), (params,), (tangent,))[1].ravel()

  return jax.vmap(product)(probes)


def sketched_ntk_similarity(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                            reference_params: Any, x: jax.Array, key: jax.Array,
                            num_probes: int = 100, estimator: str = "paper", *,
                            precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Cheap NTK similarity between two parameter sets from kernel-vector products.

  Draws Gaussian probes ``v`` of the output's shape and forms ``Theta v = J (J^T v)`` (a VJP
  then a JVP, no kernel materialised) at ``params`` and at ``reference_params``.

  * ``"paper"``: cosine of the probe-averaged products, as in Buffelli et al.'s code.
    Since ``Theta`` is linear this is ``cos(Theta_1 vbar, Theta_2 vbar)`` for one effective
    probe ``vbar``; it is noisy and only tracks the exact similarity in trend.
  * ``"frobenius"``: ``sum_v <Theta_1 v, Theta_2 v> / sqrt(sum_v |Theta_1 v|^2 sum_v |Theta_2 v|^2)``,
    a consistent estimator of ``1 - kernel_distance(Theta_1, Theta_2)`` over the full
    (example, output) kernel, because ``E[v^T A B v] = tr(A B) = <A, B>_F`` for symmetric
    ``A, B`` and standard Gaussian ``v``.

  Args:
    apply_fn: model function ``(params, x) -> (n, *out)``; for the paper's measurement pass
      the ``d``-dim hidden output of the network, not the logits. Needs forward mode (RevMLP:
      ``memory_mode="autodiff"``).
    params: current parameters (e.g. after ``t`` epochs).
    reference_params: parameters to compare with (e.g. at initialisation), same structure.
    x: one batch of inputs.
    key: PRNG key for the probes.
    num_probes: number of probes (the paper uses 100).
    estimator: ``"paper"`` or ``"frobenius"``.
    precision: of every product, the model's included (module docstring).

  Returns:
    Scalar similarity (1 means the kernels agree up to scale).
  """
  if estimator not in SKETCH_ESTIMATORS:
    raise ValueError(f"Unknown estimator {estimator!r}; allowed: {SKETCH_ESTIMATORS}.")
  if num_probes < 1:
    raise ValueError(f"num_probes must be >= 1; got {num_probes}.")
  if jax.tree.structure(params) != jax.tree.structure(reference_params):
    raise ValueError("params and reference_params must have the same pytree structure.")
  out = jax.eval_shape(apply_fn, params, x)
  probes = jax.random.normal(key, (num_probes,) + out.shape, out.dtype)
  with matmul_precision(precision):
    products = _ntk_probe_products(apply_fn, params, x, probes)
    reference_products = _ntk_probe_products(apply_fn, reference_params, x, probes)
    if estimator == "paper":
      products = jnp.mean(products, axis=0)
      reference_products = jnp.mean(reference_products, axis=0)
    return jnp.vdot(products, reference_products) / (
        jnp.linalg.norm(products) * jnp.linalg.norm(reference_products))
