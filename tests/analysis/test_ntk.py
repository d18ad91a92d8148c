import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import analysis
from .tiny_models import dense_jacobian, mlp_apply, mlp_params

IMPLEMENTATIONS = ("jacobian", "vector_products")

# Jitted: eager dispatch compiles every primitive separately and is far slower.
empirical_ntk = jax.jit(analysis.empirical_ntk,
                        static_argnames=("apply_fn", "trace_axes", "implementation"))
sketched_ntk_similarity = jax.jit(analysis.sketched_ntk_similarity,
                                  static_argnames=("apply_fn", "num_probes", "estimator"))


def _inputs(n, seed):
  return jax.random.normal(jax.random.key(seed), (n, 3), jnp.float64)


def _dense_full_kernel(apply_fn, params, x1, x2):
  """``(n1, c, n2, c)`` kernel from materialised Jacobians."""
  jacobian = jax.jit(dense_jacobian, static_argnums=0)
  j1, j2 = jacobian(apply_fn, params, x1), jacobian(apply_fn, params, x2)
  c = apply_fn(params, x1).shape[-1]
  return (j1 @ j2.T).reshape(x1.shape[0], c, x2.shape[0], c)


@pytest.mark.x64
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_per_logit_kernel_equals_dense_jacobian_product(implementation):
  params = mlp_params(jax.random.key(0))
  x1, x2 = _inputs(3, 1), _inputs(4, 2)
  kernel = empirical_ntk(mlp_apply, params, x1, x2, trace_axes=(),
                                  implementation=implementation)
  dense = _dense_full_kernel(mlp_apply, params, x1, x2)
  assert kernel.shape == (3, 4, 2, 2)
  np.testing.assert_allclose(kernel, dense.transpose(0, 2, 1, 3), rtol=1e-12, atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_traced_kernel_sums_the_logit_diagonal(implementation):
  params = mlp_params(jax.random.key(0))
  x1 = _inputs(3, 1)
  kernel = empirical_ntk(mlp_apply, params, x1, implementation=implementation)
  dense = _dense_full_kernel(mlp_apply, params, x1, x1)
  assert kernel.shape == (3, 3)
  np.testing.assert_allclose(kernel, np.einsum("icjc->ij", dense), rtol=1e-12, atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_untraced_axes_of_a_rank3_output_come_interleaved(implementation):
  def apply_fn(params, x):  # (n, 2, 2): the logits and their squares as a second row
    logits = mlp_apply(params, x)
    return jnp.stack([logits, logits**2], axis=1)

  params = mlp_params(jax.random.key(3))
  x1, x2 = _inputs(2, 4), _inputs(3, 5)
  kernel = empirical_ntk(apply_fn, params, x1, x2, trace_axes=(-1,),
                                  implementation=implementation)
  jacobian = jax.jit(dense_jacobian, static_argnums=0)
  j1 = jacobian(apply_fn, params, x1).reshape(2, 2, 2, -1)
  j2 = jacobian(apply_fn, params, x2).reshape(3, 2, 2, -1)
  assert kernel.shape == (2, 3, 2, 2)
  np.testing.assert_allclose(kernel, np.einsum("ahcp,bgcp->abhg", j1, j2), rtol=1e-12,
                             atol=1e-12)


def test_bad_ntk_arguments_are_rejected():
  params = mlp_params(jax.random.key(0), jnp.float32)
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="implementation"):
    analysis.empirical_ntk(mlp_apply, params, x, implementation="structured")
  with pytest.raises(ValueError, match="batch axis"):
    analysis.empirical_ntk(mlp_apply, params, x, trace_axes=(0,))
  with pytest.raises(ValueError, match="out of range"):
    analysis.empirical_ntk(mlp_apply, params, x, trace_axes=(2,))


def test_kernel_distance_is_zero_for_rescaled_and_one_for_orthogonal_kernels():
  kernel = jnp.array([[2.0, 1.0], [1.0, 3.0]])
  assert abs(float(analysis.kernel_distance(kernel, 5.0 * kernel))) < 1e-6
  orthogonal = jnp.array([[0.0, 1.0], [1.0, 0.0]])
  assert abs(float(analysis.kernel_distance(jnp.eye(2), orthogonal)) - 1.0) < 1e-6
  np.testing.assert_allclose(analysis.kernel_velocity(jnp.eye(2), orthogonal, dt=4.0), 0.25)
  with pytest.raises(ValueError, match="dt"):
    analysis.kernel_velocity(kernel, kernel, dt=0.0)


def _moved_params(params, scale):
  direction = mlp_params(jax.random.key(11))
  return jax.tree.map(lambda p, d: p + scale * d, params, direction)


def _exact_similarity(params, reference, x):
  full = lambda p: empirical_ntk(mlp_apply, p, x, trace_axes=()).transpose(
      0, 2, 1, 3).reshape(x.shape[0] * 2, -1)
  return 1.0 - analysis.kernel_distance(full(params), full(reference))


@pytest.mark.x64
def test_frobenius_sketch_converges_to_exact_kernel_similarity():
  params, x = mlp_params(jax.random.key(0)), _inputs(4, 1)
  for scale in (0.3, 1.0):
    moved = _moved_params(params, scale)
    exact = _exact_similarity(moved, params, x)
    sketch = sketched_ntk_similarity(mlp_apply, moved, params, x, jax.random.key(2),
                                              num_probes=4000, estimator="frobenius")
    assert abs(float(sketch - exact)) < 0.02, (scale, sketch, exact)


SCALES = (0.0, 0.25, 0.5, 1.0, 2.0)


def _similarity_curves(estimator, seeds):
  params, x = mlp_params(jax.random.key(0)), _inputs(4, 1)
  exact = [float(_exact_similarity(_moved_params(params, s), params, x)) for s in SCALES]
  sketches = [[float(sketched_ntk_similarity(
      mlp_apply, _moved_params(params, s), params, x, jax.random.key(seed), estimator=estimator))
               for s in SCALES] for seed in seeds]
  return np.array(exact), np.array(sketches)


@pytest.mark.x64
def test_frobenius_sketch_falls_with_the_exact_similarity_for_every_seed():
  exact, sketches = _similarity_curves("frobenius", seeds=(0, 1, 2))
  assert np.all(np.diff(exact) < 0), exact
  np.testing.assert_allclose(sketches[:, 0], 1.0, rtol=1e-12)
  assert np.all(np.diff(sketches, axis=1) < 0), sketches
  assert np.max(np.abs(sketches - exact)) < 0.02


@pytest.mark.x64
def test_paper_sketch_tracks_the_exact_similarity_on_average_over_seeds():
  # One effective probe per seed (Theta is linear, so averaging K v = K vbar): single seeds
  # can be non-monotone, the seed average follows the exact curve.
  exact, sketches = _similarity_curves("paper", seeds=range(8))
  mean = sketches.mean(axis=0)
  np.testing.assert_allclose(sketches[:, 0], 1.0, rtol=1e-12)
  assert np.all(np.diff(mean) < 0), mean
  assert np.max(np.abs(mean - exact)) < 0.05, (mean, exact)
