"""optax behaviour of the GN transforms: composition, hyperparameters, no recompilation, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import gn
from tests.gn.tiny_revmlp import tiny_problem


def _zeros_like(tree):
  return jax.tree.map(jnp.zeros_like, tree)


@pytest.mark.x64
def test_exact_gn_update_is_learning_rate_times_direction_and_chains_with_clipping():
  model, variables, x, labels, _ = tiny_problem()
  params, fixed = variables["params"], variables["fixed"]
  direction, _ = gn.exact_gn_direction(model, variables, x, labels)
  tx = gn.exact_gn(0.1, model=model)
  updates, state = tx.update(_zeros_like(params), tx.init(params), params, batch=(x, labels),
                             fixed=fixed)
  np.testing.assert_allclose(ravel_pytree(updates)[0], 0.1 * ravel_pytree(direction)[0],
                             rtol=1e-12)
  chained = optax.chain(gn.exact_gn(0.1, model=model), optax.clip_by_global_norm(1e-3))
  updates, _ = chained.update(_zeros_like(params), chained.init(params), params,
                              batch=(x, labels), fixed=fixed)
  np.testing.assert_allclose(optax.tree.norm(updates), 1e-3, rtol=1e-10)
  np.testing.assert_allclose(ravel_pytree(updates)[0] / 1e-3,
                             ravel_pytree(direction)[0] / jnp.linalg.norm(
                                 ravel_pytree(direction)[0]), rtol=1e-10, atol=1e-14)


@pytest.mark.x64
def test_inject_hyperparams_jitted_updates_do_not_recompile():
  model, variables, x, labels, _ = tiny_problem()
  params, fixed = variables["params"], variables["fixed"]
  tx = optax.inject_hyperparams(gn.exact_gn, static_args=("model",))(
      learning_rate=0.1, model=model, loss="mse", solver="svd", rtol=1e-8)
  state = tx.init(params)
  update = jax.jit(tx.update)
  dtypes = jax.tree.map(lambda leaf: leaf.dtype, state)
  for step in range(2):
    updates, state = update(_zeros_like(params), state, params, batch=(x, labels), fixed=fixed,
                            unused_extra=step)
    params = optax.apply_updates(params, updates)
  assert update._cache_size() == 1
  assert jax.tree.map(lambda leaf: leaf.dtype, state) == dtypes
  assert int(state.inner_state[0].count) == 2 and int(state.inner_state[0].num_skipped) == 0
  state.hyperparams["learning_rate"] = jnp.zeros_like(state.hyperparams["learning_rate"])
  updates, _ = update(_zeros_like(params), state, params, batch=(x, labels), fixed=fixed,
                      unused_extra=2)
  assert float(optax.tree.norm(updates)) == 0.0
  assert update._cache_size() == 1


@pytest.mark.x64
def test_missing_batch_or_fixed_raise_type_errors_that_name_them():
  model, variables, x, labels, apply_fn = tiny_problem()
  params = variables["params"]
  tx = gn.exact_gn(0.1, model=model)
  with pytest.raises(TypeError, match="batch=\\(x, y\\)"):
    tx.update(_zeros_like(params), tx.init(params), params, fixed=variables["fixed"])
  with pytest.raises(TypeError, match="fixed="):
    tx.update(_zeros_like(params), tx.init(params), params, batch=(x, labels))
  tx = gn.gauss_newton(1.0, apply_fn=apply_fn)
  with pytest.raises(TypeError, match="batch=\\(x, y\\)"):
    tx.update(_zeros_like(params), tx.init(params), params)


@pytest.mark.x64
@pytest.mark.parametrize("transform", ["exact_gn", "gauss_newton"])
def test_non_finite_direction_is_skipped_and_counted_and_the_state_stays_finite(transform):
  model, variables, x, labels, _ = tiny_problem()
  params = variables["params"]
  if transform == "exact_gn":
    tx = gn.exact_gn(0.1, model=model)
  else:
    autodiff = model.clone(memory_mode="autodiff")
    tx = gn.gauss_newton(0.1, apply_fn=lambda p, inputs, fixed: autodiff.apply(
        {"params": p, "fixed": fixed}, inputs), loss="ce_identity")
  update = lambda batch, state: tx.update(_zeros_like(params), state, params, batch=batch,
                                          fixed=variables["fixed"])
  updates, state = update((x, labels), tx.init(params))
  norm = float(state[0].last_direction_norm)
  np.testing.assert_allclose(norm, 10 * float(optax.tree.norm(updates)), rtol=1e-5)
  updates, state = update((x.at[0, 0].set(jnp.nan), labels), state)
  assert float(jnp.abs(ravel_pytree(updates)[0]).max()) == 0.0
  assert int(state[0].num_skipped) == 1 and not bool(state[0].last_finite)
  assert float(state[0].last_direction_norm) == norm  # the last finite step's, not NaN


class _TinyMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, param_dtype=jnp.float64)(jnp.tanh(nn.Dense(16, param_dtype=jnp.float64)(x)))


@pytest.mark.x64
def test_gauss_newton_transform_fits_a_flax_mlp_and_composes_with_inject_hyperparams():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (6, 4), jnp.float64)
  targets = jax.random.normal(keys[1], (6, 3), jnp.float64)
  model = _TinyMLP()
  params = model.init(keys[2], x)["params"]
  apply_fn = lambda p, inputs: model.apply({"params": p}, inputs)
  tx = optax.inject_hyperparams(gn.gauss_newton, static_args=("apply_fn",))(
      learning_rate=1.0, apply_fn=apply_fn, loss="mse", damping=1e-10, tol=1e-12)
  state = tx.init(params)
  update = jax.jit(tx.update)
  start = float(gn.loss_value("mse", apply_fn(params, x), targets))
  for _ in range(8):
    updates, state = update(_zeros_like(params), state, params, batch=(x, targets))
    params = optax.apply_updates(params, updates)
  assert float(gn.loss_value("mse", apply_fn(params, x), targets)) < 1e-12 * start
  assert update._cache_size() == 1


@pytest.mark.x64
def test_gauss_newton_passes_fixed_variables_to_the_model_and_matches_the_direction():
  model, variables, x, labels, _ = tiny_problem()
  autodiff = model.clone(memory_mode="autodiff")
  apply_fn = lambda p, inputs, fixed: autodiff.apply({"params": p, "fixed": fixed}, inputs)
  tx = gn.gauss_newton(0.5, apply_fn=apply_fn, loss="ce_identity", tol=1e-12)
  params = variables["params"]
  updates, _ = jax.jit(tx.update)(_zeros_like(params), tx.init(params), params,
                                  batch=(x, labels), fixed=variables["fixed"])
  reference, _ = gn.min_norm_gn_direction(
      lambda p, inputs: apply_fn(p, inputs, variables["fixed"]), params, x, labels,
      loss="ce_identity", tol=1e-12)
  np.testing.assert_allclose(ravel_pytree(updates)[0], 0.5 * ravel_pytree(reference)[0],
                             rtol=1e-8, atol=1e-12)


@pytest.mark.x64
def test_gauss_newton_steps_an_invert_mode_revmlp_like_its_autodiff_twin():
  model, variables, x, labels, _ = tiny_problem(seed=2)
  assert model.memory_mode == "invert"
  updates = {}
  for mode in ("invert", "autodiff"):
    clone = model.clone(memory_mode=mode)
    apply_fn = lambda p, inputs, fixed, clone=clone: clone.apply({"params": p, "fixed": fixed},
                                                                 inputs)
    tx = gn.gauss_newton(1.0, apply_fn=apply_fn, loss="ce_identity", tol=1e-12)
    params = variables["params"]
    updates[mode], _ = jax.jit(tx.update)(_zeros_like(params), tx.init(params), params,
                                          batch=(x, labels), fixed=variables["fixed"])
  np.testing.assert_allclose(ravel_pytree(updates["invert"])[0],
                             ravel_pytree(updates["autodiff"])[0], rtol=1e-9, atol=1e-12)


def test_exact_gn_on_a_model_that_is_not_a_revmlp_names_the_requirement_and_the_alternative():
  with pytest.raises(TypeError, match="needs a gnrev.nets.RevMLP.*got _TinyMLP.*gn.gauss_newton"):
    gn.exact_gn(0.1, model=_TinyMLP())
