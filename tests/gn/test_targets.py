"""Output-space rules H^+ g against explicit per-sample Hessians and gradients (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import gn


def _per_sample_hessian_and_gradient(loss, logits, targets):
  def sample_loss(z, t):
    return gn.loss_value(loss, z[None], t[None])
  hessians = jax.vmap(jax.hessian(sample_loss))(logits, targets)
  gradients = jax.vmap(jax.grad(sample_loss))(logits, targets)
  return hessians, gradients


def _logits_and_soft_targets(seed=0, n=6, c=5, scale=3.0):
  keys = jax.random.split(jax.random.key(seed))
  logits = scale * jax.random.normal(keys[0], (n, c), jnp.float64)
  targets = jax.nn.softmax(2 * jax.random.normal(keys[1], (n, c), jnp.float64))
  return logits, targets


@pytest.mark.x64
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_rule_equals_explicit_pseudo_inverse_of_per_sample_hessian(loss):
  logits, targets = _logits_and_soft_targets()
  hessians, gradients = _per_sample_hessian_and_gradient(loss, logits, targets)
  expected = jnp.einsum("nij,nj->ni", jnp.linalg.pinv(hessians, hermitian=True), gradients)
  np.testing.assert_allclose(gn.pinv_hessian_gradient(loss, logits, targets), expected,
                             rtol=1e-9, atol=1e-10)


@pytest.mark.x64
def test_exact_ce_rule_equals_pinv_of_softmax_hessian_times_p_minus_y():
  logits, _ = _logits_and_soft_targets(seed=1)
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  p = jax.nn.softmax(logits)
  y = jax.nn.one_hot(labels, 5, dtype=jnp.float64)
  hessians = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
  expected = jnp.einsum("nij,nj->ni", jnp.linalg.pinv(hessians, hermitian=True), p - y)
  np.testing.assert_allclose(gn.pinv_hessian_gradient("ce", logits, labels), expected,
                             rtol=1e-8, atol=1e-10)


@pytest.mark.x64
def test_identity_ce_rule_is_the_logit_gradient():
  logits, targets = _logits_and_soft_targets(seed=2)
  _, gradients = _per_sample_hessian_and_gradient("ce", logits, targets)
  np.testing.assert_allclose(gn.pinv_hessian_gradient("ce_identity", logits, targets), gradients,
                             rtol=1e-12, atol=1e-14)


@pytest.mark.x64
def test_exact_ce_rule_stays_finite_on_confident_mistakes_with_logits_of_size_100():
  logits = jnp.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]])
  labels = jnp.array([1, 0])
  v = gn.pinv_hessian_gradient("ce", logits, labels)
  assert bool(jnp.all(jnp.isfinite(v)))
  # Still the min-norm solution: orthogonal to the Hessian's null space span(1), and
  # H v = p - y (checked relative to the huge 1/p_target scale of v).
  np.testing.assert_allclose(jnp.sum(v, axis=-1) / jnp.max(jnp.abs(v), axis=-1), 0, atol=1e-12)
  np.testing.assert_allclose(v[0, 1], -(2 / 3) * jnp.exp(200.0 + jnp.log1p(jnp.exp(-100.0) +
                                                                        jnp.exp(-200.0))),
                             rtol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("loss", gn.LOSSES)
def test_integer_labels_mean_one_hot_targets(loss):
  logits, _ = _logits_and_soft_targets(seed=3)
  labels = jnp.array([4, 3, 2, 1, 0, 4])
  np.testing.assert_array_equal(
      gn.newton_target(loss, logits, labels),
      gn.newton_target(loss, logits, jax.nn.one_hot(labels, 5, dtype=jnp.float64)))


def test_bad_loss_and_target_shapes_are_rejected():
  logits = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match="Unknown loss 'xent'"):
    gn.newton_target("xent", logits, jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match=r"Integer labels must have shape \(batch,\)"):
    gn.newton_target("ce", logits, jnp.zeros((3, 1), jnp.int32))
  with pytest.raises(ValueError, match="Float targets must have the logits' shape"):
    gn.newton_target("mse", logits, jnp.zeros((3, 5)))
