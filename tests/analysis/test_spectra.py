import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import analysis
from .tiny_models import dense_jacobian, mlp_apply, mlp_params, mse_loss


def _problem():
  params = mlp_params(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
  y = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)
  return params, x, y


def _hessian_operator():
  """Hessian-vector product of the tiny MLP loss and its dense matrix (26 x 26)."""
  params, x, y = _problem()
  flat, unravel = ravel_pytree(params)
  dense = jax.jit(jax.hessian(lambda f: mse_loss(unravel(f), x, y)))(flat)
  hvp = lambda v: jax.jvp(jax.grad(mse_loss), (params, x, y), (v, jnp.zeros_like(x),
                                                               jnp.zeros_like(y)))[1]
  return hvp, params, dense


def _ggn_operator():
  """GGN-vector product J^T (1/n) J of the MSE loss; rank <= n c = 8 < 26."""
  params, x, _ = _problem()
  n = x.shape[0]
  jac = jax.jit(dense_jacobian, static_argnums=0)(mlp_apply, params, x)
  model = lambda p: mlp_apply(p, x)

  def gvp(v):
    jv = jax.jvp(model, (params,), (v,))[1]
    return jax.vjp(model, params)[1](jv / n)[0]

  return gvp, params, jac.T @ jac / n


OPERATORS = {"hessian": _hessian_operator, "ggn": _ggn_operator}


@pytest.mark.x64
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_top_eigenpairs_match_dense_eigh(name):
  matvec, params, dense = OPERATORS[name]()
  exact = np.linalg.eigvalsh(dense)[::-1]
  values, vectors = jax.jit(analysis.top_eigenvalues, static_argnums=(0, 3))(
      matvec, params, jax.random.key(3), 3)
  np.testing.assert_allclose(values, exact[:3], rtol=1e-8, atol=1e-10)
  flat_vectors = jax.vmap(lambda v: ravel_pytree(v)[0])(vectors)
  residual = flat_vectors @ dense - values[:, None] * flat_vectors
  assert np.max(np.abs(residual)) < 1e-6
  np.testing.assert_allclose(np.linalg.norm(flat_vectors, axis=1), 1.0, rtol=1e-10)


@pytest.mark.x64
def test_lanczos_restarts_past_an_invariant_subspace_and_recovers_every_eigenvalue():
  matvec, params, dense = _ggn_operator()
  dim = dense.shape[0]
  result = jax.jit(analysis.lanczos, static_argnums=(0, 2))(matvec, params, dim, jax.random.key(0))
  ritz = np.linalg.eigvalsh(np.diag(result.alphas) + np.diag(result.betas, 1)
                            + np.diag(result.betas, -1))
  assert np.isfinite(ritz).all() and np.sum(np.asarray(result.betas) == 0.0) >= 1
  np.testing.assert_allclose(ritz, np.linalg.eigvalsh(dense), atol=1e-10)
  np.testing.assert_allclose(result.basis @ result.basis.T, np.eye(dim), atol=1e-10)


@pytest.mark.x64
def test_lanczos_quadrature_reproduces_moments_below_degree_2m():
  matvec, params, dense = _hessian_operator()
  steps = 5
  probe = jax.random.normal(jax.random.key(7), (dense.shape[0],), jnp.float64)
  result = jax.jit(analysis.lanczos, static_argnums=(0, 2))(lambda v: dense @ v, probe, steps,
                                                            jax.random.key(0))
  nodes, coords = np.linalg.eigh(np.diag(result.alphas) + np.diag(result.betas, 1)
                                 + np.diag(result.betas, -1))
  unit = probe / jnp.linalg.norm(probe)
  for power in range(2 * steps):
    moment = unit @ np.linalg.matrix_power(dense, power) @ unit
    np.testing.assert_allclose(np.sum(coords[0]**2 * nodes**power), moment, rtol=1e-8,
                               atol=1e-10)


@pytest.mark.x64
def test_slq_density_approaches_the_smoothed_exact_spectrum():
  matvec, params, dense = _hessian_operator()
  exact = np.linalg.eigvalsh(dense)
  quadrature = jax.jit(analysis.stochastic_lanczos_quadrature, static_argnums=(0, 3, 4))(
      matvec, params, jax.random.key(1), dense.shape[0], 64)
  np.testing.assert_allclose(np.sort(quadrature.nodes[0]), exact, atol=1e-8)
  np.testing.assert_allclose(quadrature.weights.sum(axis=1), 1.0, rtol=1e-10)
  sigma = 0.05 * (exact[-1] - exact[0])
  grid, density = jax.jit(analysis.spectral_density)(quadrature, bandwidth=sigma)
  reference = np.mean(np.exp(-0.5 * ((grid[:, None] - exact) / sigma)**2), axis=1) / (
      sigma * np.sqrt(2 * np.pi))
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)
  assert np.trapezoid(np.abs(density - reference), grid) < 0.15


@pytest.mark.x64
def test_truncated_slq_nodes_lie_in_the_spectrum_and_approach_its_ends():
  matvec, params, dense = _hessian_operator()
  exact = np.linalg.eigvalsh(dense)
  quadrature = jax.jit(analysis.stochastic_lanczos_quadrature, static_argnums=(0, 3, 4))(
      matvec, params, jax.random.key(2), 12, 4)
  # Ritz values interlace: they never leave [lambda_min, lambda_max].
  assert np.all(quadrature.nodes >= exact[0] - 1e-10)
  assert np.all(quadrature.nodes <= exact[-1] + 1e-10)
  np.testing.assert_allclose(quadrature.nodes[:, -1], exact[-1], rtol=0.02)
  grid, density = jax.jit(analysis.spectral_density)(quadrature)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)


def test_bad_spectra_arguments_are_rejected():
  params = {"w": jnp.ones((3,))}
  identity = lambda v: v
  with pytest.raises(ValueError, match="num_steps"):
    analysis.lanczos(identity, params, 4, jax.random.key(0))
  with pytest.raises(ValueError, match="k must be"):
    analysis.top_eigenvalues(identity, params, jax.random.key(0), k=4, num_steps=3)
  with pytest.raises(ValueError, match="bandwidth"):
    analysis.spectral_density(analysis.QuadratureNodes(jnp.ones((1, 2)), jnp.ones((1, 2))),
                              bandwidth=-1.0)
