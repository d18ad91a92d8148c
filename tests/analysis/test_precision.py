"""CKA and NTK references under emulated GPU/TPU products (tests.precision_emulation).

The analysis tools compare kernels to 1e-6. In float32 at the default ``precision="highest"``
they stay there under TF32 / bfloat16 emulation; lowered on purpose, the Gram-based CKA and the
NTK degrade visibly (the numbers in the comments were measured on these inputs).
"""

import jax
import jax.numpy as jnp
import pytest

from gnrev import analysis
from tests.analysis.tiny_models import mlp_apply, mlp_params
from tests.precision_emulation import (BFLOAT16_BITS, TF32_BITS, check_emulation_works,
                                       reduced_precision_products)

REFERENCE_TOLERANCE = 1e-6


def _float32(tree):
  return jax.tree.map(lambda a: a.astype(jnp.float32), tree)


def _relu_features(n=64):
  """Non-negative features with a large mean, as ReLU layers give: centring a Gram matrix after
  the product then cancels most of it, which amplifies the product's rounding."""
  keys = jax.random.split(jax.random.key(0), 2)
  x = jax.nn.relu(jax.random.normal(keys[0], (n, 200), jnp.float64) + 1.0)
  y = jax.nn.relu(x @ jax.random.normal(keys[1], (200, 100), jnp.float64) / 14 + 0.5)
  return x, y


@pytest.mark.x64
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_holds_its_reference_tolerance_unless_products_are_lowered(debiased):
  check_emulation_works()
  x, y = _relu_features()
  reference = float(analysis.linear_cka(x, y, debiased=debiased))
  cka32 = jax.jit(analysis.linear_cka, static_argnames=("debiased", "precision"))
  error = lambda **kw: abs(float(cka32(*_float32((x, y)), debiased=debiased, **kw)) - reference)
  for bits in (TF32_BITS, BFLOAT16_BITS):
    with reduced_precision_products(bits):
      assert error() < REFERENCE_TOLERANCE   # measured 5e-9 (3e-8 debiased)
  with reduced_precision_products(TF32_BITS):
    # measured 8.5e-6 (6.3e-6 debiased) on jax 0.10, 2.0e-6 debiased on jax 0.8
    assert error(precision="default") > REFERENCE_TOLERANCE


@pytest.mark.x64
def test_feature_space_cka_centres_before_the_product_so_tf32_barely_moves_it():
  x, y = _relu_features()
  reference = float(analysis.feature_space_linear_cka(x, y))
  with reduced_precision_products(TF32_BITS):
    lowered = float(analysis.feature_space_linear_cka(*_float32((x, y)), precision="default"))
    kept = float(analysis.feature_space_linear_cka(*_float32((x, y))))
  assert abs(kept - reference) < REFERENCE_TOLERANCE
  assert abs(lowered - reference) < REFERENCE_TOLERANCE   # measured 5.9e-7


@pytest.mark.x64
@pytest.mark.parametrize("implementation", ["jacobian", "vector_products"])
def test_empirical_ntk_and_kernel_distance_hold_unless_products_are_lowered(implementation):
  params = mlp_params(jax.random.key(1), inputs=6, hidden=16, outputs=3)
  later = jax.tree.map(lambda p: 1.05 * p, params)
  x = jax.random.normal(jax.random.key(2), (8, 6), jnp.float64)
  ntk = lambda p, inputs, **kw: analysis.empirical_ntk(mlp_apply, p, inputs,
                                                       implementation=implementation, **kw)
  kernel, kernel_later = ntk(params, x), ntk(later, x)
  distance = float(analysis.kernel_distance(kernel, kernel_later))

  def errors(**precision):
    k1 = ntk(_float32(params), _float32(x), **precision)
    k2 = ntk(_float32(later), _float32(x), **precision)
    moved = float(analysis.kernel_distance(k1, k2, **precision))
    return (float(jnp.linalg.norm(k1 - kernel) / jnp.linalg.norm(kernel)),
            abs(moved - distance) / distance)

  with reduced_precision_products(TF32_BITS):
    kernel_error, distance_error = errors()
    lowered_kernel_error, lowered_distance_error = errors(precision="default")
  assert kernel_error < REFERENCE_TOLERANCE and distance_error < 1e-2
  assert lowered_kernel_error > 30 * REFERENCE_TOLERANCE
  assert lowered_distance_error > 3e-2


def test_sketched_ntk_similarity_is_the_cpu_value_unless_products_are_lowered():
  # float32 probes differ from float64 ones (same key), so the reference is the float32 value
  # computed on the CPU, whose products are exact float32 ones; the float64 agreement of the
  # kernels themselves is the test above.
  params = mlp_params(jax.random.key(1), dtype=jnp.float32, inputs=6, hidden=16, outputs=3)
  later = jax.tree.map(lambda p: 1.05 * p, params)
  x = jax.random.normal(jax.random.key(2), (8, 6), jnp.float32)
  similarity = lambda **kw: float(analysis.sketched_ntk_similarity(
      mlp_apply, params, later, x, jax.random.key(3), num_probes=16, estimator="frobenius",
      **kw))
  reference = similarity()
  with reduced_precision_products(TF32_BITS):
    kept = similarity()
    lowered = similarity(precision="default")
  assert kept == reference
  assert abs(lowered - reference) > 3 * REFERENCE_TOLERANCE
