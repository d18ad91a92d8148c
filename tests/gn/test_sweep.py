"""The exact GN sweep against a materialised Jacobian (float64, docs/gn.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import gn
from gnrev.curvature import dense_jacobian
from tests.gn.tiny_revmlp import feature_matrix_ranks, tiny_problem


def _dense_residual(apply_fn, params, x, direction, wanted):
  jacobian, _ = dense_jacobian(apply_fn, params, x)
  realised = jacobian @ ravel_pytree(direction)[0]
  return float(jnp.linalg.norm(realised - wanted.reshape(-1)) / jnp.linalg.norm(wanted))


@pytest.mark.x64
@pytest.mark.parametrize("loss", gn.LOSSES)
@pytest.mark.parametrize("allocation,scale", [("full", 3.0), ("split", 1.0)])
def test_right_inverse_realises_scaled_newton_target_exactly(loss, allocation, scale):
  model, variables, x, labels, apply_fn = tiny_problem()
  direction, info = gn.exact_gn_direction(model, variables, x, labels, loss=loss,
                                          allocation=allocation)
  target = gn.newton_target(loss, apply_fn(variables["params"], x), labels)
  assert _dense_residual(apply_fn, variables["params"], x, direction, scale * target) < 1e-10
  assert float(info["residual"]) < 1e-10
  assert bool(info["finite"]) and float(info["function_space_scale"]) == scale
  np.testing.assert_array_equal(info["rank"], np.full((3, 2), 8))
  assert float(jnp.min(info["min_singular_value"])) > 1e-3


@pytest.mark.x64
def test_sweep_on_nhwc_images_splits_them_as_the_model_does():
  model, variables, x, labels, apply_fn = tiny_problem()
  # The same 12 features as 2 x 2 pixels with 3 channels (channel-major, as the model reads them).
  images = jnp.transpose(x.reshape(8, 3, 2, 2), (0, 2, 3, 1))
  np.testing.assert_allclose(apply_fn(variables["params"], images),
                             apply_fn(variables["params"], x), rtol=1e-14)
  direction, info = gn.exact_gn_direction(model, variables, images, labels, loss="mse")
  target = gn.newton_target("mse", apply_fn(variables["params"], images), labels)
  assert _dense_residual(apply_fn, variables["params"], images, direction, 3.0 * target) < 1e-10
  assert float(info["residual"]) < 1e-10
  flat_direction, _ = gn.exact_gn_direction(model, variables, x, labels, loss="mse")
  np.testing.assert_allclose(ravel_pytree(direction)[0], ravel_pytree(flat_direction)[0],
                             rtol=1e-12, atol=1e-14)


@pytest.mark.x64
def test_inverted_sweep_and_svd_solver_give_the_same_direction():
  model, variables, x, labels, _ = tiny_problem()
  reference, _ = gn.exact_gn_direction(model, variables, x, labels)
  for options in ({"keep_activations": False}, {"solver": "svd"},
                  {"solver": "svd", "keep_activations": False}):
    direction, _ = gn.exact_gn_direction(model, variables, x, labels, **options)
    np.testing.assert_allclose(ravel_pytree(direction)[0], ravel_pytree(reference)[0],
                               rtol=1e-9, atol=1e-12)


@pytest.mark.x64
def test_explicit_allocation_moves_logits_by_sum_of_weights():
  model, variables, x, labels, apply_fn = tiny_problem()
  direction, info = gn.exact_gn_direction(model, variables, x, labels, loss="mse",
                                          allocation=(0.5, 0.0, 2.0))
  target = gn.newton_target("mse", apply_fn(variables["params"], x), labels)
  assert _dense_residual(apply_fn, variables["params"], x, direction, 2.5 * target) < 1e-10
  # A block with weight 0 is not updated.
  assert float(jnp.abs(ravel_pytree(direction["block_1"])[0]).max()) == 0.0


@pytest.mark.x64
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_direction_solves_the_gauss_newton_normal_equations(loss):
  model, variables, x, labels, apply_fn = tiny_problem(seed=1)
  direction, _ = gn.exact_gn_direction(model, variables, x, labels, loss=loss, allocation="split")
  params = variables["params"]
  jacobian, _ = dense_jacobian(apply_fn, params, x)
  logits = apply_fn(params, x)
  total_loss = lambda z: jnp.sum(jax.vmap(lambda zi, yi: gn.loss_value(loss, zi[None], yi[None]))(
      z, labels))
  hessian = jax.hessian(total_loss)(logits).reshape(logits.size, logits.size)
  gradient = jax.grad(total_loss)(logits).reshape(-1)
  lhs = jacobian.T @ hessian @ jacobian @ ravel_pytree(direction)[0]
  rhs = -jacobian.T @ gradient
  np.testing.assert_allclose(lhs, rhs, rtol=1e-8, atol=1e-10 * float(jnp.abs(rhs).max()))


@pytest.mark.x64
def test_gn_steps_with_learning_rate_one_drive_full_batch_mse_to_zero():
  model, variables, x, labels, apply_fn = tiny_problem(seed=2, init_std=0.1)
  targets = jax.nn.one_hot(labels, 4, dtype=jnp.float64)
  params = variables["params"]
  losses = []
  for _ in range(6):
    losses.append(float(gn.loss_value("mse", apply_fn(params, x), targets)))
    direction, _ = gn.exact_gn_direction(model, {**variables, "params": params}, x, targets,
                                         loss="mse", allocation="split")
    params = jax.tree.map(lambda p, d: p + d, params, direction)
  final = float(gn.loss_value("mse", apply_fn(params, x), targets))
  assert final < 1e-12 * losses[0], (losses, final)


@pytest.mark.x64
def test_variant_without_bottleneck_is_exact_when_the_batch_fits():
  # Without expansion, A = [phi(u), 1] has h + 1 = 7 columns: a batch of 6 fits.
  model, variables, x, labels, apply_fn = tiny_problem(batch_size=6, expansion=None)
  direction, info = gn.exact_gn_direction(model, variables, x, labels, loss="mse")
  target = gn.newton_target("mse", apply_fn(variables["params"], x), labels)
  assert _dense_residual(apply_fn, variables["params"], x, direction, 3 * target) < 1e-10
  with pytest.raises(ValueError, match=r"at most input half \+ 1 = 7"):
    gn.exact_gn_direction(model, variables, *tiny_problem(batch_size=8, expansion=None)[2:4])


@pytest.mark.x64
def test_cholesky_rejects_batch_larger_than_expansion_plus_one():
  model, variables, x, labels, _ = tiny_problem(batch_size=10, expansion=8)
  with pytest.raises(ValueError, match=r"Batch size 10 .* expansion \+ 1 = 9"):
    gn.exact_gn_direction(model, variables, x, labels)


@pytest.mark.x64
def test_svd_reports_residual_when_batch_exceeds_expansion_plus_one():
  model, variables, x, labels, apply_fn = tiny_problem(batch_size=10, expansion=8)
  direction, info = gn.exact_gn_direction(model, variables, x, labels, solver="svd")
  target = gn.newton_target("ce_identity", apply_fn(variables["params"], x), labels)
  dense = _dense_residual(apply_fn, variables["params"], x, direction, 3 * target)
  assert dense > 1e-3
  np.testing.assert_allclose(float(info["residual"]), dense, rtol=1e-8)
  ranks = feature_matrix_ranks(model, variables, x)
  assert np.all(ranks <= 9)  # 9 = expansion + 1 < batch 10: never full row rank
  np.testing.assert_array_equal(info["rank"], ranks)
  np.testing.assert_array_equal(info["min_singular_value"], np.zeros((3, 2)))


@pytest.mark.x64
def test_linear_first_block_with_too_few_features_is_rejected_or_reported():
  # h = 3 input features per half, so block 0's feature matrices have rank <= 4 < n = 8.
  model, variables, x, labels, apply_fn = tiny_problem(features=6, linear_first_block=True)
  with pytest.raises(ValueError, match="block 0 is linear"):
    gn.exact_gn_direction(model, variables, x, labels)
  direction, info = gn.exact_gn_direction(model, variables, x, labels, solver="svd")
  target = gn.newton_target("ce_identity", apply_fn(variables["params"], x), labels)
  dense = _dense_residual(apply_fn, variables["params"], x, direction, 3 * target)
  assert dense > 1e-3
  np.testing.assert_allclose(float(info["residual"]), dense, rtol=1e-8)
  np.testing.assert_array_equal(info["rank"][0], [4, 4])
  np.testing.assert_array_equal(info["rank"][1:], np.full((2, 2), 8))
  # The Gram-based solvers read the same ranks off the eigenvalues of A A^T.
  _, info = gn.exact_gn_direction(model, variables, x, labels, solver="damped", damping=1e-3)
  np.testing.assert_array_equal(info["rank"], [[4, 4], [8, 8], [8, 8]])
  assert float(info["residual"]) > 1e-3


@pytest.mark.x64
@pytest.mark.parametrize("options", [{"solver": "svd", "rtol": 0.5},
                                     {"solver": "damped", "damping": 1.0}])
def test_truncation_and_damping_make_the_step_inexact_and_info_says_so(options):
  model, variables, x, labels, apply_fn = tiny_problem()
  direction, info = gn.exact_gn_direction(model, variables, x, labels, **options)
  target = gn.newton_target("ce_identity", apply_fn(variables["params"], x), labels)
  dense = _dense_residual(apply_fn, variables["params"], x, direction, 3 * target)
  assert dense > 1e-3
  np.testing.assert_allclose(float(info["residual"]), dense, rtol=1e-8)


@pytest.mark.x64
def test_non_finite_direction_is_flagged():
  model, variables, x, labels, _ = tiny_problem()
  x = x.at[0, 0].set(jnp.nan)
  _, info = gn.exact_gn_direction(model, variables, x, labels, diagnostics=False)
  assert not bool(info["finite"])
  assert set(info) == {"finite", "direction_norm", "function_space_scale"}


@pytest.mark.x64
def test_bad_options_are_rejected():
  model, variables, x, labels, _ = tiny_problem()
  with pytest.raises(ValueError, match="Unknown solver 'qr'"):
    gn.exact_gn_direction(model, variables, x, labels, solver="qr")
  with pytest.raises(ValueError, match="Unknown allocation 'half'"):
    gn.exact_gn_direction(model, variables, x, labels, allocation="half")
  with pytest.raises(ValueError, match=r"shape \(3,\)"):
    gn.exact_gn_direction(model, variables, x, labels, allocation=(0.5, 0.5))
  with pytest.raises(ValueError, match="solver='damped'"):
    gn.exact_gn_direction(model, variables, x, labels, damping=0.1)
