"""Masks: exact target sparsity, kernels only, pruned weights kept at zero by any optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnrev import prune


def toy_params():
  keys = jax.random.split(jax.random.key(0), 3)
  return {"Conv_0": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4)), "bias": jnp.ones(4)},
          "Dense_0": {"kernel": jax.random.normal(keys[1], (36, 5)), "bias": jnp.ones(5)},
          "LayerNorm_0": {"scale": jax.random.normal(keys[2], (5,))}}


def num_pruned(masks):
  return sum(int(jnp.sum(~m)) for m in jax.tree.leaves(masks))


def test_only_dense_and_conv_kernels_are_prunable():
  assert prune.prunable(toy_params()) == {
      "Conv_0": {"kernel": True, "bias": False}, "Dense_0": {"kernel": True, "bias": False},
      "LayerNorm_0": {"scale": False}}


def test_cubic_schedule_with_gradual_pruning_reaches_the_target_exactly():
  params = toy_params()
  schedule = prune.cubic_sparsity_schedule(0.9, 4)
  assert schedule[-1] == 0.9 and all(a < b for a, b in zip(schedule, schedule[1:]))
  seen = []

  def prune_step(params, masks, target):
    masks, params = prune.obs_prune(params, masks, target, prune.magnitude_inverse(params))
    seen.append(num_pruned(masks))
    return masks, params

  masks, pruned = prune.gradual_pruning(prune_step, lambda p, m: p, params, schedule)
  assert seen == [round(s * (72 + 180)) for s in schedule]
  assert float(prune.sparsity(masks)) == pytest.approx(round(0.9 * 252) / 252)
  assert masks["Conv_0"]["bias"].all() and masks["LayerNorm_0"]["scale"].all()


def test_layer_ranking_prunes_every_layer_to_the_target_and_never_revives():
  params = toy_params()
  masks = prune.select_masks(jax.tree.map(jnp.abs, params), prune.dense_masks(params), 0.5,
                             ranking="layer")
  assert int(jnp.sum(~masks["Conv_0"]["kernel"])) == 36
  assert int(jnp.sum(~masks["Dense_0"]["kernel"])) == 90
  lower = prune.select_masks(jax.tree.map(jnp.abs, params), masks, 0.2)
  assert num_pruned(lower) == num_pruned(masks)


@pytest.mark.parametrize("optimizer", [optax.adamw(1e-2, weight_decay=0.1),
                                       optax.sgd(1e-2, momentum=0.9)])
def test_pruned_weights_stay_exactly_zero_through_fine_tuning(optimizer):
  params = toy_params()
  masks = prune.select_masks(jax.tree.map(jnp.abs, params), prune.dense_masks(params), 0.5)
  params = prune.apply_masks(params, masks)
  tx = optax.chain(optimizer, prune.keep_masked(masks))
  state = tx.init(params)
  loss = lambda p: sum(jnp.sum((x - 1.0)**2) for x in jax.tree.leaves(p))

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(5):
    params, state = step(params, state)
  masks = prune.select_masks(jax.tree.map(jnp.abs, params), masks, 0.8)
  params, state = prune.apply_masks(params, masks), prune.replace_masks(state, masks)
  for _ in range(5):
    params, state = step(params, state)
  assert step._cache_size() == 1
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
    np.testing.assert_array_equal(p[~m], 0.0)
    assert jnp.all(p[m] != 0.0)


def test_bad_arguments_raise_clear_errors():
  params = toy_params()
  with pytest.raises(ValueError, match="ranking"):
    prune.select_masks(params, prune.dense_masks(params), 0.5, ranking="row")
  with pytest.raises(ValueError, match="sparsity"):
    prune.select_masks(params, prune.dense_masks(params), 1.0)
  with pytest.raises(ValueError, match="num_steps"):
    prune.cubic_sparsity_schedule(0.9, 0)
  with pytest.raises(ValueError, match="damping"):
    prune.init_surgeon(params, 0.0)
  with pytest.raises(ValueError, match="prunable"):
    prune.sparsity({"scale": jnp.ones(3, bool)})
