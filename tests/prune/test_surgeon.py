"""FishLeg Surgeon and the OBS baselines against dense float64 computations on a tiny MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import curvature, prune

LIKELIHOOD = curvature.categorical()
DAMPING = 0.1


class TinyMLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x)))


MODEL = TinyMLP()


def apply_fn(params, x):
  return MODEL.apply({"params": params}, x)


def tiny_problem():
  x = jax.random.normal(jax.random.key(0), (32, 3))
  params = MODEL.init(jax.random.key(1), x)["params"]
  return params, x


def flat(tree):
  return ravel_pytree(tree)[0]


@pytest.mark.x64
def test_fishleg_scores_and_compensation_approach_exact_obs_as_q_converges():
  params, x = tiny_problem()
  masks = prune.select_masks(jax.tree.map(jnp.abs, params), prune.dense_masks(params), 0.3)
  params = prune.apply_masks(params, masks)
  exact = prune.exact_inverse_fisher(apply_fn, params, masks, x, LIKELIHOOD, DAMPING)
  exact_masks, exact_params = prune.obs_prune(params, masks, 0.6, exact)
  keep = flat(masks)
  state = prune.init_surgeon(params, DAMPING, q_family="full")
  errors = []
  for _ in range(3):
    state = prune.refine_q(state, apply_fn, params, masks, x, LIKELIHOOD, jax.random.key(2),
                           num_steps=1000, damping=DAMPING, batch_size=None,
                           aux_learning_rate=3e-3)
    inverse = prune.fishleg_inverse(state, params, masks)
    scores = flat(prune.obs_scores(params, inverse.diagonal))
    exact_scores = flat(prune.obs_scores(params, exact.diagonal))
    score_error = jnp.linalg.norm((scores - exact_scores) * keep) / jnp.linalg.norm(
        exact_scores * keep)
    new_masks, new_params = prune.obs_prune(params, masks, 0.6, inverse)
    params_error = (jnp.linalg.norm(flat(new_params) - flat(exact_params)) /
                    jnp.linalg.norm(flat(exact_params)))
    errors.append((float(score_error), float(params_error)))
  assert errors[-1][0] < 0.3 * errors[0][0] and errors[-1][1] < 0.3 * errors[0][1], errors
  assert errors[-1][0] < 1e-2 and errors[-1][1] < 1e-2, errors
  np.testing.assert_array_equal(flat(new_masks), flat(exact_masks))


@pytest.mark.x64
def test_exact_obs_single_weight_is_the_constrained_quadratic_minimiser():
  params, x = tiny_problem()
  flat_params, unravel = ravel_pytree(params)
  fisher_vector = curvature.ggn_vector_product(apply_fn, params, x, LIKELIHOOD)
  fisher = jax.jacfwd(lambda v: flat(fisher_vector(unravel(v))))(jnp.zeros_like(flat_params))
  damped = fisher + DAMPING * jnp.eye(flat_params.size)
  exact = prune.exact_inverse_fisher(apply_fn, params, prune.dense_masks(params), x, LIKELIHOOD,
                                     DAMPING)
  eligible = flat(jax.tree.map(lambda p, e: jnp.full(p.shape, e), params, prune.prunable(params)))
  num_prunable = int(eligible.sum())
  masks, pruned = prune.obs_prune(params, prune.dense_masks(params), 1 / num_prunable, exact)
  (q,) = np.flatnonzero(~flat(masks))
  # Minimise 1/2 d^T F_gamma d subject to (theta + d)_q = 0 by its KKT system.
  size = flat_params.size
  kkt = jnp.zeros((size + 1, size + 1)).at[:size, :size].set(damped)
  kkt = kkt.at[size, q].set(1.0).at[q, size].set(1.0)
  rhs = jnp.zeros(size + 1).at[size].set(-flat_params[q])
  delta = jnp.linalg.solve(kkt, rhs)[:size]
  np.testing.assert_allclose(flat(pruned), flat_params + delta, rtol=1e-5, atol=1e-9)
  scores = flat(prune.obs_scores(params, exact.diagonal))
  assert float(scores[q]) == pytest.approx(float(0.5 * delta @ damped @ delta), rel=1e-8)
  assert scores[q] == jnp.min(jnp.where(eligible, scores, jnp.inf))


def test_magnitude_and_diagonal_fisher_obs_only_zero_the_lowest_scores():
  params, x = tiny_problem()
  masks, pruned = prune.obs_prune(params, prune.dense_masks(params), 0.5,
                                  prune.magnitude_inverse(params))
  for p, m, q, e in zip(*map(jax.tree.leaves, (params, masks, pruned, prune.prunable(params)))):
    np.testing.assert_array_equal(q, jnp.where(m, p, 0.0))
    if e:
      assert jnp.max(jnp.abs(p)[~m]) <= jnp.min(jnp.abs(p)[m])
    else:
      assert m.all()
  y = jnp.arange(32) % 3
  squared = prune.mean_squared_gradients(apply_fn, params, x, y, LIKELIHOOD, chunk_size=10)
  per_example = jax.vmap(lambda xi, yi: jax.grad(
      lambda p: LIKELIHOOD.nll(apply_fn(p, xi[None]), yi[None]))(params))(x, y)
  np.testing.assert_allclose(flat(squared), flat(jax.tree.map(lambda g: jnp.mean(g**2, 0),
                                                              per_example)), rtol=1e-5)
  inverse = prune.diagonal_fisher_inverse(squared, DAMPING)
  masks, pruned = prune.obs_prune(params, prune.dense_masks(params), 0.5, inverse)
  np.testing.assert_array_equal(flat(pruned), flat(prune.apply_masks(params, masks)))


def test_masked_q_is_zero_on_pruned_weights_and_matches_warm_start_diagonal():
  params, _ = tiny_problem()
  squared = jax.tree.map(lambda p: jnp.abs(p) + 0.5, params)
  state = prune.init_surgeon(params, DAMPING, squared)
  masks = prune.select_masks(jax.tree.map(jnp.abs, params), prune.dense_masks(params), 0.5)
  inverse = prune.fishleg_inverse(state, params, masks)
  np.testing.assert_allclose(flat(inverse.diagonal), 1 / (flat(squared) + DAMPING), rtol=1e-5)
  product = inverse.vector(jax.tree.map(jnp.ones_like, params))
  np.testing.assert_array_equal(flat(product) == 0, ~flat(masks))


def test_fishleg_surgeon_prunes_kernels_to_target_and_compensates_survivors():
  params, x = tiny_problem()
  masks, pruned = prune.fishleg_surgeon(apply_fn, params, x, LIKELIHOOD, 0.5,
                                        rng=jax.random.key(3), damping=DAMPING, num_aux_steps=20,
                                        batch_size=8, ranking="layer")
  assert int(jnp.sum(~masks["Dense_0"]["kernel"])) == 6
  assert int(jnp.sum(~masks["Dense_1"]["kernel"])) == 6
  kept, original = flat(pruned)[flat(masks)], flat(params)[flat(masks)]
  assert jnp.all(flat(pruned)[~flat(masks)] == 0) and not jnp.allclose(kept, original)
