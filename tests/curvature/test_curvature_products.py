"""Reference tests for gnrev.curvature: likelihoods and matrix-free products vs dense algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import curvature

LIKELIHOOD_CASES = ["gaussian", "bernoulli", "categorical"]


def _tiny_mlp():
  """A 3-4-3 tanh MLP: 31 parameters, batch of 5."""
  keys = jax.random.split(jax.random.key(0), 5)
  params = {"w1": jax.random.normal(keys[0], (3, 4)), "b1": jax.random.normal(keys[1], (4,)),
            "w2": jax.random.normal(keys[2], (4, 3)), "b2": jax.random.normal(keys[3], (3,))}
  x = jax.random.normal(keys[4], (5, 3))

  def apply_fn(p, xb):
    return jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  return apply_fn, params, x


def _targets(name, outputs):
  key = jax.random.key(1)
  if name == "categorical":
    return jax.random.randint(key, outputs.shape[:1], 0, outputs.shape[-1])
  return jax.random.uniform(key, outputs.shape, outputs.dtype)


def _likelihood(name):
  return curvature.gaussian(0.7) if name == "gaussian" else curvature.get_likelihood(name)


def _assert_product_is(product, dense, unravel, seed):
  """``product`` (a params-shaped matrix-free product) applied to a random ``v`` is ``dense v``."""
  v = jax.random.normal(jax.random.key(seed), (dense.shape[1],), dense.dtype)
  np.testing.assert_allclose(ravel_pytree(product(unravel(v)))[0], dense @ v, rtol=1e-10,
                             atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("name", LIKELIHOOD_CASES)
def test_ggn_vector_product_equals_dense_jt_h_j(name):
  apply_fn, params, x = _tiny_mlp()
  lik = _likelihood(name)
  flat, unravel = ravel_pytree(params)
  outputs = apply_fn(params, x)
  targets = _targets(name, outputs)
  jac = jax.jacfwd(lambda f: apply_fn(unravel(f), x).reshape(-1))(flat)
  h_out = jax.hessian(lambda o: lik.nll(o.reshape(outputs.shape), targets))(outputs.reshape(-1))
  dense_ggn = jac.T @ h_out @ jac
  _assert_product_is(curvature.ggn_vector_product(apply_fn, params, x, lik), dense_ggn, unravel,
                     seed=2)


@pytest.mark.x64
def test_ggn_equals_categorical_fisher_by_label_enumeration():
  apply_fn, params, x = _tiny_mlp()
  lik = curvature.categorical()
  flat, unravel = ravel_pytree(params)
  probs = jax.nn.softmax(apply_fn(params, x))

  def example_grad(n, c):
    return jax.grad(lambda f: lik.nll(apply_fn(unravel(f), x[n:n + 1]), jnp.array([c])))(flat)

  fisher = sum(probs[n, c] * jnp.outer(example_grad(n, c), example_grad(n, c))
               for n in range(x.shape[0]) for c in range(3)) / x.shape[0]
  _assert_product_is(curvature.ggn_vector_product(apply_fn, params, x, lik), fisher, unravel,
                     seed=3)


@pytest.mark.x64
def test_hessian_vector_product_equals_dense_hessian():
  apply_fn, params, x = _tiny_mlp()
  lik = curvature.bernoulli()
  flat, unravel = ravel_pytree(params)
  targets = _targets("bernoulli", apply_fn(params, x))
  loss = lambda p: lik.nll(apply_fn(p, x), targets)
  dense = jax.hessian(lambda f: loss(unravel(f)))(flat)
  _assert_product_is(curvature.hessian_vector_product(loss, params), dense, unravel, seed=4)


@pytest.mark.x64
@pytest.mark.parametrize("name", LIKELIHOOD_CASES)
def test_sampled_fisher_product_matches_ggn_in_expectation(name):
  """Mean over 4000 label draws is within 5 standard errors (and 5% relative) of ``G v``."""
  apply_fn, params, x = _tiny_mlp()
  lik = _likelihood(name)
  flat, unravel = ravel_pytree(params)
  v = unravel(jax.random.normal(jax.random.key(5), flat.shape))
  exact = ravel_pytree(curvature.ggn_vector_product(apply_fn, params, x, lik)(v))[0]
  draw = lambda key: ravel_pytree(
      curvature.sampled_fisher_vector_product(apply_fn, params, x, lik, key)(v))[0]
  samples = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(6), 4000))
  mean, stderr = samples.mean(0), samples.std(0) / np.sqrt(samples.shape[0])
  assert np.all(np.abs(mean - exact) <= 5 * stderr + 1e-9)
  assert np.linalg.norm(mean - exact) < 0.05 * np.linalg.norm(exact)


def test_nll_matches_optax_losses():
  outputs = jax.random.normal(jax.random.key(7), (4, 3))
  labels = jnp.array([0, 2, 1, 2])
  pixels = jax.random.uniform(jax.random.key(8), (4, 3))
  np.testing.assert_allclose(
      curvature.categorical().nll(outputs, labels),
      optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean(), rtol=1e-6)
  np.testing.assert_allclose(
      curvature.bernoulli().nll(outputs, pixels),
      optax.sigmoid_binary_cross_entropy(outputs, pixels).sum(-1).mean(), rtol=1e-6)
  sigma = 0.5
  expected = (0.5 * ((outputs - pixels) / sigma)**2 + np.log(sigma * np.sqrt(2 * np.pi)))
  np.testing.assert_allclose(curvature.gaussian(sigma).nll(outputs, pixels),
                             expected.sum(-1).mean(), rtol=1e-6)


@pytest.mark.parametrize("name", LIKELIHOOD_CASES)
def test_sample_draws_from_the_model(name):
  outputs = jnp.array([[2.0, -1.0, 0.5]])
  lik = _likelihood(name)
  draws = jax.vmap(lambda k: lik.sample(outputs, k))(jax.random.split(jax.random.key(9), 20000))
  if name == "categorical":
    freq = jnp.stack([(draws == c).mean() for c in range(3)])
    np.testing.assert_allclose(freq, jax.nn.softmax(outputs[0]), atol=0.015)
  elif name == "bernoulli":
    np.testing.assert_allclose(draws.mean(0)[0], jax.nn.sigmoid(outputs[0]), atol=0.015)
  else:
    np.testing.assert_allclose(draws.mean(0)[0], outputs[0], atol=0.03)
    np.testing.assert_allclose(draws.std(0)[0], 0.7, atol=0.03)


def test_bad_likelihood_arguments_raise():
  with pytest.raises(ValueError, match="sigma > 0"):
    curvature.gaussian(0.0)
  with pytest.raises(ValueError, match="allowed"):
    curvature.get_likelihood("poisson")
  with pytest.raises(ValueError, match="batch axis"):
    curvature.bernoulli().nll(jnp.zeros(3), jnp.zeros(3))
