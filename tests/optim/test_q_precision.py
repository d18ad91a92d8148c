"""FishLeg's Q products under emulated GPU/TPU products (tests.precision_emulation).

FishLeg factorises nothing: Q is learned from stochastic Fisher products, so its products keep
JAX's fast default. This states what that costs: with TF32 products (a recent NVIDIA GPU) a Q
product stays within ``TF32_Q_TOLERANCE`` of float64, well inside the sampling noise of the
Fisher estimate it is learned from; bfloat16 products (a TPU's default) exceed it; and
``gnrev.curvature.matmul_precision("highest")`` around the step restores float32 accuracy.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import optim
from gnrev.curvature import matmul_precision
from tests.precision_emulation import (BFLOAT16_BITS, TF32_BITS, check_emulation_works,
                                       reduced_precision_products)

# Measured relative errors of Q v (Kronecker / full): float32 2e-7 / 3e-7, TF32 4.5e-4 / 3.2e-4,
# bfloat16 3.4e-3 / 2.7e-3.
TF32_Q_TOLERANCE = 1e-3


def _mlp_params_and_lam(q_family):
  keys = iter(jax.random.split(jax.random.key(0), 16))
  params = {"Dense_0": {"kernel": jax.random.normal(next(keys), (40, 30), jnp.float64),
                        "bias": jax.random.normal(next(keys), (30,), jnp.float64)},
            "Dense_1": {"kernel": jax.random.normal(next(keys), (30, 10), jnp.float64),
                        "bias": jax.random.normal(next(keys), (10,), jnp.float64)}}
  structure = optim.q_structure(params, q_family)
  ones = jax.tree.map(jnp.ones_like, params)
  lam = structure.lam_for_diagonal(ones)
  # Random factors (not the identity) with the layout lam_for_diagonal gives.
  lam = jax.tree.map(lambda f: jax.random.normal(next(keys), f.shape, f.dtype), lam)
  return params, structure, lam


def _relative_error(value, reference):
  value, reference = ravel_pytree(value)[0], ravel_pytree(reference)[0]
  return float(jnp.linalg.norm(value.astype(reference.dtype) - reference)
               / jnp.linalg.norm(reference))


@pytest.mark.x64
@pytest.mark.parametrize("q_family", ["kronecker", "full"])
def test_q_products_stay_within_the_stated_tf32_tolerance(q_family):
  check_emulation_works()
  params, structure, lam = _mlp_params_and_lam(q_family)
  v = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
  reference = structure.q_vector(lam, v)
  lam32, v32 = jax.tree.map(lambda a: a.astype(jnp.float32), (lam, v))

  def errors():
    direct = _relative_error(jax.jit(structure.q_vector)(lam32, v32), reference)
    cache = jax.jit(structure.product_cache)(lam32)
    cached = _relative_error(jax.jit(structure.q_vector_cached)(lam32, cache, v32), reference)
    return max(direct, cached)

  def errors_at_highest():
    with matmul_precision("highest"):
      return errors()

  with reduced_precision_products(TF32_BITS):
    tf32, restored = errors(), errors_at_highest()
  with reduced_precision_products(BFLOAT16_BITS):
    bfloat16 = errors()
  assert 1e-5 < tf32 < TF32_Q_TOLERANCE, tf32
  assert bfloat16 > TF32_Q_TOLERANCE, bfloat16
  assert restored < 1e-5, restored
