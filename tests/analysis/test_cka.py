import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import analysis

# Jitted once per shape: eager dispatch compiles every primitive separately and is far slower.
linear_cka = jax.jit(analysis.linear_cka, static_argnames="debiased")
feature_space_linear_cka = jax.jit(analysis.feature_space_linear_cka, static_argnames="debiased")
rbf_cka = jax.jit(analysis.rbf_cka, static_argnames="debiased")


def _kornblith_demo_features():
  np.random.seed(1337)
  x = np.random.randn(100, 10)
  y = np.random.randn(100, 10) + x
  return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.x64
def test_matches_kornblith_demo_golden_values():
  x, y = _kornblith_demo_features()
  for value, golden in [(linear_cka(x, y), 0.55761),
                        (feature_space_linear_cka(x, y), 0.55761),
                        (linear_cka(x, y, debiased=True), 0.51346),
                        (feature_space_linear_cka(x, y, debiased=True), 0.51346),
                        (rbf_cka(x, y, 0.5), 0.65483)]:
    assert abs(float(value) - golden) < 5e-6, (value, golden)


def _random_features(seed, n=12, p=5, q=7):
  kx, ky, kq = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, p), jnp.float64)
  y = jnp.tanh(x @ jax.random.normal(ky, (p, q), jnp.float64)) + 0.3 * jax.random.normal(
      kq, (n, q), jnp.float64)
  return x, y


@pytest.mark.x64
@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_form_equals_gram_form(debiased):
  for seed, (n, p, q) in enumerate([(12, 5, 7), (6, 9, 2)]):
    x, y = _random_features(seed, n, p, q)
    np.testing.assert_allclose(feature_space_linear_cka(x, y, debiased=debiased),
                               linear_cka(x, y, debiased=debiased), rtol=1e-12)


CKA_VARIANTS = {
    "linear": linear_cka,
    "debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "rbf": lambda x, y: rbf_cka(x, y, 0.8),
}


@pytest.mark.x64
@pytest.mark.parametrize("variant", sorted(CKA_VARIANTS))
def test_invariant_to_orthogonal_maps_and_isotropic_scaling_but_not_general_linear_maps(variant):
  similarity = CKA_VARIANTS[variant]
  x, y = _random_features(0)
  rotation, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (5, 5), jnp.float64))
  reference = similarity(x, y)
  np.testing.assert_allclose(similarity(3.7 * x @ rotation, y), reference, rtol=1e-10)
  np.testing.assert_allclose(similarity(x, 0.2 * y), reference, rtol=1e-10)
  stretch = jnp.diag(jnp.array([10.0, 1.0, 0.1, 1.0, 1.0]))
  assert abs(float(similarity(x @ stretch, y) - reference)) > 1e-3


@pytest.mark.x64
def test_identical_representations_have_cka_one():
  x, _ = _random_features(2)
  for similarity in CKA_VARIANTS.values():
    np.testing.assert_allclose(similarity(x, x), 1.0, rtol=1e-12)


def _unbiased_hsic_song(k, l):
  """Song et al. 2012, eq. 5: unbiased HSIC from Gram matrices with zeroed diagonals."""
  n = k.shape[0]
  k, l = k * (1 - np.eye(n)), l * (1 - np.eye(n))
  ones = np.ones(n)
  return (np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
          - 2.0 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))


@pytest.mark.x64
def test_minibatch_cka_is_the_ratio_of_batch_averaged_unbiased_hsic():
  batches = [_random_features(seed, n=8) for seed in range(3)]
  extra = [jnp.sin(x[:, :3]) for x, _ in batches]
  update = jax.jit(analysis.minibatch_cka_update)
  state = analysis.minibatch_cka_init([batches[0][0], extra[0]], batches[0][1])
  for (x, y), z in zip(batches, extra):
    state = update(state, [x, z], y)
  assert update._cache_size() == 1
  result = analysis.minibatch_cka_result(state)
  assert result.shape == (2, 1) and int(state.num_batches) == 3

  gram = lambda a: np.asarray(a @ a.T)
  for row, layer in enumerate([[x for x, _ in batches], extra]):
    hsic = lambda f, g: np.mean([_unbiased_hsic_song(f(i), g(i)) for i in range(3)])
    gx = lambda i: gram(layer[i])
    gy = lambda i: gram(batches[i][1])
    expected = hsic(gx, gy) / np.sqrt(hsic(gx, gx) * hsic(gy, gy))
    np.testing.assert_allclose(result[row, 0], expected, rtol=1e-10)


@pytest.mark.x64
def test_minibatch_cka_of_one_batch_is_debiased_linear_cka():
  x, y = _random_features(4, n=10)
  state = jax.jit(analysis.minibatch_cka_update)(analysis.minibatch_cka_init(x, y), x, y)
  np.testing.assert_allclose(analysis.minibatch_cka_result(state)[0, 0],
                             linear_cka(x, y, debiased=True), rtol=1e-12)


def test_bad_cka_inputs_are_rejected():
  x = jnp.ones((3, 2))
  with pytest.raises(ValueError, match="at least 4"):
    analysis.linear_cka(x, x, debiased=True)
  with pytest.raises(ValueError, match="same n examples"):
    analysis.feature_space_linear_cka(x, jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="threshold"):
    analysis.gram_rbf(x, threshold=0.0)
  state = analysis.minibatch_cka_init(jnp.ones((5, 2)), jnp.ones((5, 2)))
  with pytest.raises(ValueError, match="x layers"):
    analysis.minibatch_cka_update(state, [jnp.ones((5, 2))] * 2, jnp.ones((5, 2)))
