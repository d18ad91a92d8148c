"""Min-norm (Moore-Penrose) GN step: CG on J J^T against dense least squares (float64)."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import gn
from gnrev.curvature import dense_jacobian
from tests.gn.tiny_revmlp import tiny_problem


@pytest.mark.x64
@pytest.mark.parametrize("loss", gn.LOSSES)
def test_min_norm_direction_is_lstsq_and_no_longer_than_the_sweep(loss):
  model, variables, x, labels, apply_fn = tiny_problem()
  params = variables["params"]
  direction, info = gn.min_norm_gn_direction(apply_fn, params, x, labels, loss=loss, tol=1e-14)
  jacobian, _ = dense_jacobian(apply_fn, params, x)
  target = gn.newton_target(loss, apply_fn(params, x), labels).reshape(-1)
  expected = jnp.linalg.lstsq(jacobian, target)[0]
  flat = ravel_pytree(direction)[0]
  np.testing.assert_allclose(flat, expected, atol=1e-8 * float(jnp.abs(expected).max()))
  np.testing.assert_allclose(ravel_pytree(gn.dense_gn_direction(apply_fn, params, x, labels,
                                                                loss=loss))[0], expected,
                             rtol=1e-12, atol=1e-14)
  sweep, _ = gn.exact_gn_direction(model, variables, x, labels, loss=loss, allocation="split")
  assert float(info["direction_norm"]) <= float(jnp.linalg.norm(ravel_pytree(sweep)[0]))
  # Both realise the same function-space step.
  np.testing.assert_allclose(jacobian @ flat, jacobian @ ravel_pytree(sweep)[0], rtol=1e-8,
                             atol=1e-10)


@pytest.mark.x64
def test_min_norm_mse_step_equals_pseudo_inverse_of_gauss_newton_matrix():
  # For MSE (H = I) and damping 0: D = -(J^T J)^+ J^T g.
  _, variables, x, labels, apply_fn = tiny_problem(seed=3)
  params = variables["params"]
  direction, _ = gn.min_norm_gn_direction(apply_fn, params, x, labels, loss="mse", tol=1e-14)
  jacobian, _ = dense_jacobian(apply_fn, params, x)
  gradient = gn.pinv_hessian_gradient("mse", apply_fn(params, x), labels).reshape(-1)
  expected = -jnp.linalg.pinv(jacobian.T @ jacobian, hermitian=True) @ jacobian.T @ gradient
  np.testing.assert_allclose(ravel_pytree(direction)[0], expected,
                             atol=1e-7 * float(jnp.abs(expected).max()))


@pytest.mark.x64
def test_damped_min_norm_step_is_levenberg_marquardt():
  _, variables, x, labels, apply_fn = tiny_problem(seed=4)
  params = variables["params"]
  damping = 0.3
  direction, info = gn.min_norm_gn_direction(apply_fn, params, x, labels, loss="mse",
                                             damping=damping, tol=1e-14)
  jacobian, _ = dense_jacobian(apply_fn, params, x)
  target = gn.newton_target("mse", apply_fn(params, x), labels).reshape(-1)
  expected = jacobian.T @ jnp.linalg.solve(
      jacobian @ jacobian.T + damping * jnp.eye(jacobian.shape[0]), target)
  np.testing.assert_allclose(ravel_pytree(direction)[0], expected,
                             atol=1e-9 * float(jnp.abs(expected).max()))
  assert float(info["residual"]) < 1e-10 and bool(info["finite"])


@pytest.mark.x64
@pytest.mark.parametrize("memory_mode", ["invert", "remat"])
def test_min_norm_direction_of_a_memory_saving_revmlp_matches_the_dense_reference(memory_mode):
  # "invert" is a jax.custom_vjp, which forward mode cannot differentiate: the products must
  # come from reverse mode alone. The dense reference uses the plain-autodiff twin.
  model, variables, x, labels, reference_fn = tiny_problem(seed=5)
  saving = model.clone(memory_mode=memory_mode)
  apply_fn = lambda p, inputs: saving.apply({**variables, "params": p}, inputs)
  params = variables["params"]
  direction, info = gn.min_norm_gn_direction(apply_fn, params, x, labels, loss="mse",
                                             tol=1e-14)
  expected = ravel_pytree(gn.dense_gn_direction(reference_fn, params, x, labels, loss="mse"))[0]
  np.testing.assert_allclose(ravel_pytree(direction)[0], expected,
                             atol=1e-8 * float(jnp.abs(expected).max()))
  assert float(info["residual"]) < 1e-10
