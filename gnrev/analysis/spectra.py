"""Curvature spectra from matrix-vector products: Lanczos eigenvalues and spectral densities.

Every function takes a symmetric ``matvec(v)`` over a pytree (or a flat vector), so any
product from :mod:`gnrev.curvature` (Hessian-, GGN- or Fisher-vector) works unchanged, and
nothing is materialised. Lanczos keeps its full basis and re-orthogonalises every new vector
against it (twice), which keeps Ritz values free of spurious copies at the small step counts
used here. All functions are jittable with ``num_steps``/``num_probes``/``k`` static.

References:
  Lanczos, "An iteration method for the solution of the eigenvalue problem", 1950.
  Golub and Meurant, "Matrices, Moments and Quadrature", 1994 (Gauss quadrature via Lanczos).
  Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net Optimization via Hessian
  Eigenvalue Density", ICML 2019 (stochastic Lanczos quadrature, Gaussian smoothing).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Matvec = Callable[[Any], Any]


class LanczosResult(NamedTuple):
  """Tridiagonalisation ``V^T A V = T`` after ``m`` Lanczos steps."""
  alphas: jax.Array  # (m,) diagonal of T
  betas: jax.Array   # (m - 1,) off-diagonal of T (zero where the Krylov space was restarted)
  basis: jax.Array   # (m, dim) orthonormal rows V, flattened parameter vectors


def _flat_matvec(matvec: Matvec, like: Any):
  flat_like, unravel = ravel_pytree(like)

  def flat(u):
    return ravel_pytree(matvec(unravel(u)))[0].astype(flat_like.dtype)

  return flat_like, unravel, flat


def _check_steps(num_steps: int, dim: int) -> None:
  if not 1 <= num_steps <= dim:
    raise ValueError(f"num_steps must be in [1, dim={dim}]; got {num_steps}.")


def _orthogonalise(w, basis):
  """Removes the span of ``basis`` rows (unused rows are zero) from ``w``; twice for stability."""
  for _ in range(2):
    w = w - basis.T @ (basis @ w)
  return w


def lanczos(matvec: Matvec, init_vector: Any, num_steps: int, key: jax.Array) -> LanczosResult:
  """Symmetric Lanczos with full re-orthogonalisation.

  Args:
    matvec: symmetric linear map ``v -> A v`` on pytrees shaped like ``init_vector``.
    init_vector: starting vector (pytree or flat array; normalised here). Its structure and
      dtype define the space.
    num_steps: number of steps ``m``, ``1 <= m <= dim``.
    key: PRNG key for restart vectors, drawn when the Krylov space becomes invariant (a
      low-rank GGN, a tiny model); the restart leaves a zero in ``betas``, so ``T`` stays exact.

  Returns:
    :class:`LanczosResult` with ``T``'s diagonals and the orthonormal basis.
  """
  v0, _, flat = _flat_matvec(matvec, init_vector)
  dim = v0.shape[0]
  _check_steps(num_steps, dim)
  dtype = v0.dtype
  tolerance = jnp.finfo(dtype).eps ** 0.5
  basis = jnp.zeros((num_steps, dim), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
  alphas = jnp.zeros((num_steps,), dtype)
  betas = jnp.zeros((num_steps,), dtype)
  scale = jnp.zeros((), dtype)

  def step(i, carry):
    basis, alphas, betas, scale = carry
    v = basis[i]
    w = flat(v)
    alpha = jnp.vdot(v, w)
    scale = jnp.maximum(scale, jnp.linalg.norm(w))
    w = _orthogonalise(w, basis)
    beta = jnp.linalg.norm(w)
    invariant = beta <= tolerance * scale
    restart = _orthogonalise(jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype), basis)
    w = jnp.where(invariant, restart, w)
    beta = jnp.where(invariant, 0.0, beta)
    next_row = jnp.minimum(i + 1, num_steps - 1)
    basis = jnp.where(i + 1 < num_steps, basis.at[next_row].set(w / jnp.linalg.norm(w)), basis)
    return basis, alphas.at[i].set(alpha), betas.at[i].set(beta), scale

  basis, alphas, betas, _ = jax.lax.fori_loop(0, num_steps, step, (basis, alphas, betas, scale))
  return LanczosResult(alphas=alphas, betas=betas[:-1], basis=basis)


def _tridiagonal(result: LanczosResult) -> jax.Array:
  return (jnp.diag(result.alphas) + jnp.diag(result.betas, 1) + jnp.diag(result.betas, -1))


def top_eigenvalues(matvec: Matvec, like: Any, key: jax.Array, k: int,
                    num_steps: Optional[int] = None) -> tuple[jax.Array, Any]:
  """The ``k`` largest (algebraic) eigenvalues of a symmetric operator and their eigenvectors.

  Args:
    matvec: symmetric ``v -> A v`` on pytrees shaped like ``like`` (e.g. a Hessian-vector
      product from :mod:`gnrev.curvature` at fixed params and batch).
    like: a pytree (e.g. the params) giving the space's structure and dtype.
    key: PRNG key for the starting vector and restarts.
    k: number of eigenvalues, ``1 <= k <= num_steps``.
    num_steps: Lanczos steps; default ``min(dim, max(2 k, k + 20))``. Extreme eigenvalues
      converge first, so a few times ``k`` steps usually suffice.

  Returns:
    ``(eigenvalues, eigenvectors)``: ``(k,)`` Ritz values in descending order, and a pytree
    like ``like`` with a leading axis ``k`` holding the unit-norm Ritz vectors.

  Example:
    >>> loss_fn = lambda p: jnp.sum(jnp.arange(1.0, 7.0) * p["w"] ** 2)   # Hessian diag(2..12)
    >>> params = {"w": jnp.ones(6)}
    >>> hvp = lambda v: jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]
    >>> eigenvalues, _ = top_eigenvalues(hvp, params, jax.random.key(0), k=2, num_steps=6)
    >>> [round(float(e), 3) for e in eigenvalues]
    [12.0, 10.0]
  """
  flat_like, unravel = ravel_pytree(like)
  dim = flat_like.shape[0]
  num_steps = min(dim, max(2 * k, k + 20)) if num_steps is None else num_steps
  _check_steps(num_steps, dim)
  if not 1 <= k <= num_steps:
    raise ValueError(f"k must be in [1, num_steps={num_steps}]; got {k}.")
  start_key, restart_key = jax.random.split(key)
  init = unravel(jax.random.normal(start_key, (dim,), flat_like.dtype))
  result = lanczos(matvec, init, num_steps, restart_key)
  ritz_values, ritz_coords = jnp.linalg.eigh(_tridiagonal(result))
  order = jnp.argsort(-ritz_values)[:k]
  vectors = ritz_coords[:, order].T @ result.basis
  return ritz_values[order], jax.vmap(unravel)(vectors)


class QuadratureNodes(NamedTuple):
  """Gauss quadrature rules of stochastic Lanczos quadrature, one per probe."""
  nodes: jax.Array    # (num_probes, num_steps) Ritz values theta_j
  weights: jax.Array  # (num_probes, num_steps) squared first components tau_j; rows sum to 1


def stochastic_lanczos_quadrature(matvec: Matvec, like: Any, key: jax.Array, num_steps: int,
                                  num_probes: int = 10) -> QuadratureNodes:
  """Quadrature rules whose average approximates the spectral measure ``(1/dim) sum_i delta_{lambda_i}``.

  For each unit Rademacher probe ``v``, ``m`` Lanczos steps give ``T = Q diag(theta) Q^T``;
  then ``sum_j tau_j f(theta_j)`` with ``tau_j = Q_{0j}^2`` equals ``v^T f(A) v`` exactly for
  polynomials ``f`` of degree ``< 2m``, and ``E_v[v^T f(A) v] = tr f(A) / dim``.

  Args:
    matvec: symmetric ``v -> A v`` on pytrees shaped like ``like``.
    like: a pytree giving the space's structure and dtype.
    key: PRNG key for the probes.
    num_steps: Lanczos steps per probe (Ghorbani et al. use about 90).
    num_probes: number of independent probes.

  Returns:
    :class:`QuadratureNodes` to pass to :func:`spectral_density`.
  """
  if num_probes < 1:
    raise ValueError(f"num_probes must be >= 1; got {num_probes}.")
  flat_like, unravel = ravel_pytree(like)
  dim = flat_like.shape[0]
  _check_steps(num_steps, dim)

  def one_probe(probe_key):
    sign_key, restart_key = jax.random.split(probe_key)
    probe = jax.random.rademacher(sign_key, (dim,), flat_like.dtype)
    result = lanczos(matvec, unravel(probe), num_steps, restart_key)
    nodes, coords = jnp.linalg.eigh(_tridiagonal(result))
    return nodes, coords[0]**2

  nodes, weights = jax.lax.map(one_probe, jax.random.split(key, num_probes))
  return QuadratureNodes(nodes=nodes, weights=weights)


def spectral_density(quadrature: QuadratureNodes, grid: Optional[jax.Array] = None,
                     num_points: int = 1000, bandwidth: Optional[float] = None
                     ) -> tuple[jax.Array, jax.Array]:
  """Gaussian-smoothed spectral density from stochastic Lanczos quadrature.

  .. math::

      \\phi(t) = \\frac{1}{P} \\sum_{p=1}^{P} \\sum_j \\tau_{pj}\\,
      \\mathcal{N}(t;\\, \\theta_{pj}, \\sigma^2)

  Args:
    quadrature: from :func:`stochastic_lanczos_quadrature`.
    grid: points ``t`` to evaluate at; default ``num_points`` points spanning the nodes
      padded by ``5 sigma`` each side.
    num_points: grid size when ``grid`` is ``None``.
    bandwidth: ``sigma``; default 1% of the node range (1% of ``max(|node|, 1)`` when all
      nodes coincide).

  Returns:
    ``(grid, density)``, each ``(num_points,)`` (or ``grid``'s shape); the density integrates
    to one over a grid wide enough to hold the nodes.

  Example:
    >>> matvec = lambda v: {"w": jnp.arange(1.0, 9.0) * v["w"]}        # eigenvalues 1..8
    >>> params = {"w": jnp.ones(8)}
    >>> quad = stochastic_lanczos_quadrature(matvec, params, jax.random.key(0), num_steps=8,
    ...                                      num_probes=4)
    >>> t, density = spectral_density(quad)
    >>> t.shape == density.shape
    True
  """
  nodes, weights = quadrature
  low, high = jnp.min(nodes), jnp.max(nodes)
  if isinstance(bandwidth, (int, float)) and not bandwidth > 0:
    raise ValueError(f"bandwidth must be positive; got {bandwidth}.")
  if bandwidth is None:
    sigma = 0.01 * jnp.where(high > low, high - low, jnp.maximum(jnp.abs(high), 1.0))
  else:
    sigma = jnp.asarray(bandwidth, nodes.dtype)
  if grid is None:
    grid = jnp.linspace(low - 5 * sigma, high + 5 * sigma, num_points, dtype=nodes.dtype)
  gaussians = jnp.exp(-0.5 * ((grid[..., None, None] - nodes) / sigma)**2) / (
      sigma * jnp.sqrt(2 * jnp.pi))
  density = jnp.sum(gaussians * weights, axis=(-2, -1)) / nodes.shape[0]
  return grid, density
