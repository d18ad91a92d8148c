"""RevMLP: exact inverse, memory modes, variable split, errors."""

import jax
import jax.ad_checkpoint
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnrev import nets


def _model_and_variables(num_blocks, features, *, expansion=16, init_std=0.3, num_classes=3,
                         memory_mode="autodiff", dtype=jnp.float64, batch=5, seed=0,
                         linear_first_block=True):
  model = nets.RevMLP(num_blocks=num_blocks, expansion=expansion, num_classes=num_classes,
                      linear_first_block=linear_first_block, init_std=init_std,
                      memory_mode=memory_mode, param_dtype=dtype)
  x = jax.random.normal(jax.random.key(seed + 100), (batch, features), dtype)
  return model, model.init(jax.random.key(seed), x), x


def _relative_error(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.x64
@pytest.mark.parametrize("features", [12, 13])
@pytest.mark.parametrize("num_blocks", [1, 3, 6])
@pytest.mark.parametrize("init_std", [1e-3, 0.3])
@pytest.mark.parametrize("expansion", [24, None])
def test_inverse_reconstructs_input_in_float64(features, num_blocks, init_std, expansion):
  model, variables, x = _model_and_variables(num_blocks, features, init_std=init_std,
                                             expansion=expansion)
  h = model.apply(variables, x, method=model.hidden)
  assert _relative_error(h, x) > 1e-6 * init_std  # the blocks really transform x
  x_back = model.apply(variables, h, method=model.inverse)
  assert _relative_error(x_back, x) < 1e-12


@pytest.mark.x64
def test_images_are_flattened_and_one_example_is_a_vector():
  model, variables, _ = _model_and_variables(2, 12)
  images = jax.random.normal(jax.random.key(3), (4, 3, 4), jnp.float64)
  logits = model.apply(variables, images)
  assert logits.shape == (4, 3)
  np.testing.assert_allclose(model.apply(variables, images.reshape(4, 12)), logits, rtol=1e-14)
  np.testing.assert_allclose(model.apply(variables, images[0].reshape(12)), logits[0],
                             rtol=1e-13)


@pytest.mark.x64
def test_nhwc_images_are_split_channel_major_as_the_paper_flattens_them():
  # 2 x 2 pixels, 3 channels: the paper's tensor is (C, H, W), so x1 holds the red plane and
  # the first half of the green one, whatever the pixel layout in memory.
  images = jax.random.normal(jax.random.key(4), (4, 2, 2, 3), jnp.float64)
  channel_planes = np.transpose(np.asarray(images), (0, 3, 1, 2)).reshape(4, 12)
  np.testing.assert_array_equal(nets.flatten_inputs(images), channel_planes)
  model, variables, _ = _model_and_variables(2, 12)
  logits = model.apply(variables, images)
  np.testing.assert_allclose(logits, model.apply(variables, channel_planes), rtol=1e-14)
  assert not np.allclose(logits, model.apply(variables, images.reshape(4, 12)))
  hidden = model.apply(variables, images, method=model.hidden)
  np.testing.assert_allclose(model.apply(variables, hidden, method=model.inverse),
                             channel_planes, rtol=1e-12, atol=1e-12)
  # One channel (MNIST): channel-major is the plain row-major flatten.
  gray = images[..., :1]
  np.testing.assert_array_equal(nets.flatten_inputs(gray), np.asarray(gray).reshape(4, 4))


def _loss(model, params, fixed, x):
  logits = model.apply({"params": params, "fixed": fixed}, x)
  return jnp.sum(jnp.sin(logits) ** 2) + jnp.sum(logits)


@pytest.mark.x64
@pytest.mark.parametrize("linear_first_block", [True, False])
def test_gradients_agree_across_memory_modes(linear_first_block):
  grads = {}
  for mode in nets.MEMORY_MODES:
    model, variables, x = _model_and_variables(4, 11, memory_mode=mode,
                                               linear_first_block=linear_first_block)
    grads[mode] = jax.grad(_loss, argnums=(1, 2, 3))(model, variables["params"],
                                                      variables["fixed"], x)
  flat_reference = jax.flatten_util.ravel_pytree(grads["autodiff"])[0]
  for mode in ("invert", "remat"):
    flat = jax.flatten_util.ravel_pytree(grads[mode])[0]
    assert _relative_error(flat, flat_reference) < 1e-10, mode


@pytest.mark.x64
def test_forward_mode_works_in_autodiff_mode_and_matches_finite_differences():
  model, variables, x = _model_and_variables(3, 10, memory_mode="autodiff")
  params = variables["params"]
  tangent = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
  apply = lambda p: model.apply({"params": p, "fixed": variables["fixed"]}, x)
  _, jvp = jax.jvp(apply, (params,), (tangent,))
  eps = 1e-6
  plus = apply(jax.tree.map(lambda p, t: p + eps * t, params, tangent))
  minus = apply(jax.tree.map(lambda p, t: p - eps * t, params, tangent))
  np.testing.assert_allclose(jvp, (plus - minus) / (2 * eps), rtol=1e-7, atol=1e-9)


def _temp_bytes_of_gradient_step(memory_mode, depth=16):
  model = nets.RevMLP(num_blocks=depth, expansion=512, num_classes=10, memory_mode=memory_mode)
  x = jnp.ones((64, 64), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  grad_fn = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)
  compiled = grad_fn.lower(model, variables["params"], variables["fixed"], x).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_invert_mode_needs_much_less_temporary_memory_than_autodiff():
  invert = _temp_bytes_of_gradient_step("invert")
  autodiff = _temp_bytes_of_gradient_step("autodiff")
  # Autodiff keeps phi(u C) (n x M) for both branches of all 16 blocks: ~4 MiB here.
  assert autodiff > 2 * 16 * 64 * 512 * 4 * 0.9
  assert invert < autodiff / 4, (invert, autodiff)


def test_variables_split_into_trained_params_and_fixed_and_follow_dtype():
  model, variables, x = _model_and_variables(2, 13, dtype=jnp.float32, expansion=20)
  assert set(variables) == {"params", "fixed"}
  assert set(variables["params"]) == {"block_0", "block_1"}
  block = variables["params"]["block_0"]
  assert block["F"]["W"].shape == (7, 20) and block["F"]["b"].shape == (7,)
  assert block["G"]["W"].shape == (6, 20) and block["G"]["b"].shape == (6,)
  assert variables["fixed"]["block_0"]["F"]["C"].shape == (6, 20)
  assert variables["fixed"]["block_0"]["G"]["C"].shape == (7, 20)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  u = variables["fixed"]["head"]["U"]
  np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-6)
  assert all(float(jnp.all(b["F"]["b"] == 0)) for b in variables["params"].values())
  logits = model.apply(variables, x)
  assert logits.shape == (5, 3) and logits.dtype == jnp.float32


def test_expansion_none_has_square_branches_and_no_fixed_expansion():
  _, variables, _ = _model_and_variables(2, 13, expansion=None, dtype=jnp.float32)
  assert set(variables["fixed"]) == {"head"}
  assert variables["params"]["block_1"]["F"]["W"].shape == (7, 6)
  assert variables["params"]["block_1"]["G"]["W"].shape == (6, 7)


def test_optimizer_over_params_never_touches_fixed_variables():
  model, variables, x = _model_and_variables(2, 12, dtype=jnp.float32, memory_mode="invert")
  fixed_before = jax.tree.map(np.array, variables["fixed"])
  params_before = jax.tree.map(np.array, variables["params"])
  tx = optax.adam(1e-2)
  params, state = variables["params"], tx.init(variables["params"])
  for _ in range(3):
    grads = jax.grad(_loss, argnums=1)(model, params, variables["fixed"], x)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  jax.tree.map(np.testing.assert_array_equal, variables["fixed"], fixed_before)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), params,
                                         params_before))
  assert all(changed)


def test_initialisation_is_deterministic_for_a_key_and_differs_across_keys():
  model, _, x = _model_and_variables(2, 12, dtype=jnp.float32)
  first = model.init(jax.random.key(7), x)
  again = model.init(jax.random.key(7), x)
  other = model.init(jax.random.key(8), x)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert not np.array_equal(first["fixed"]["head"]["U"], other["fixed"]["head"]["U"])
  assert not np.array_equal(first["params"]["block_0"]["F"]["W"],
                            other["params"]["block_0"]["F"]["W"])


def test_pure_block_functions_expose_the_linear_structure():
  _, variables, x = _model_and_variables(1, 12, dtype=jnp.float32)
  params = variables["params"]["block_0"]["F"]
  fixed = variables["fixed"]["block_0"]["F"]
  u = x[:, 6:]
  a = nets.feature_matrix(u, fixed, "relu")
  assert a.shape == (5, 17)
  omega = jnp.concatenate([params["W"].T, params["b"][None]], axis=0)
  np.testing.assert_allclose(a @ omega, nets.branch(u, params, fixed, "relu"), rtol=1e-5,
                             atol=1e-7)
  jax.tree.map(np.testing.assert_array_equal, nets.branch_weights_from_omega(omega), params)


def test_float32_drift_at_depth_16_is_small():
  model, variables, x = _model_and_variables(16, 64, dtype=jnp.float32, init_std=1e-3,
                                             expansion=256, batch=32)
  h = model.apply(variables, x, method=model.hidden)
  x_back = model.apply(variables, h, method=model.inverse)
  assert _relative_error(x_back, x) < 1e-5


@pytest.mark.parametrize("kwargs, message", [
    ({"num_blocks": 0}, "num_blocks"),
    ({"expansion": 0}, "expansion"),
    ({"num_classes": -1}, "num_classes"),
    ({"memory_mode": "fast"}, "memory_mode"),
    ({"init_std": -1.0}, "init_std"),
])
def test_bad_hyperparameters_are_rejected_with_the_name(kwargs, message):
  settings = dict(num_blocks=2, expansion=8, num_classes=3)
  settings.update(kwargs)
  with pytest.raises(ValueError, match=message):
    nets.RevMLP(**settings)


def test_wrong_feature_size_for_an_initialised_model_is_a_clear_error():
  model, variables, _ = _model_and_variables(2, 12, dtype=jnp.float32)
  with pytest.raises(ValueError, match="initialised for inputs with 12 features but got 14"):
    model.apply(variables, jnp.ones((3, 14)))
  with pytest.raises(ValueError, match="initialised for inputs with 12 features but got 10"):
    model.apply(variables, jnp.ones((3, 10)), method=model.inverse)


def test_too_few_features_for_the_head_is_a_clear_error():
  model = nets.RevMLP(num_blocks=1, expansion=8, num_classes=10)
  with pytest.raises(ValueError, match="num_classes=10"):
    model.init(jax.random.key(0), jnp.ones((2, 6)))


@pytest.mark.parametrize("memory_mode, keeps_expanded_features", [
    ("autodiff", True), ("remat", False), ("invert", False)])
def test_only_autodiff_keeps_the_expanded_features_for_the_backward_pass(
    memory_mode, keeps_expanded_features, capsys):
  # XLA:CPU's memory_analysis reports remat like autodiff, so the JAX-level residuals are checked.
  model, variables, x = _model_and_variables(3, 12, expansion=40, batch=5, dtype=jnp.float32,
                                             memory_mode=memory_mode)
  jax.ad_checkpoint.print_saved_residuals(
      lambda p: _loss(model, p, variables["fixed"], x), variables["params"])
  residuals = capsys.readouterr().out
  assert "f32[5,3]" in residuals  # the loss's own residuals are always there
  assert ("f32[5,40]" in residuals) == keeps_expanded_features
