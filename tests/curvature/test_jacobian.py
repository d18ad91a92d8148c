"""Matrix-free Jacobian products against the materialised Jacobian (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import curvature


def _tiny_model():
  keys = jax.random.split(jax.random.key(0), 4)
  params = {"w1": jax.random.normal(keys[0], (5, 7), jnp.float64),
            "w2": jax.random.normal(keys[1], (7, 3), jnp.float64)}
  apply_fn = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  x = jax.random.normal(keys[2], (4, 5), jnp.float64)
  return apply_fn, params, x, keys[3]


@pytest.mark.x64
def test_products_match_the_dense_jacobian():
  apply_fn, params, x, key = _tiny_model()
  jacobian, unravel = curvature.dense_jacobian(apply_fn, params, x)
  assert jacobian.shape == (12, 56)
  keys = jax.random.split(key)
  tangent = jax.random.normal(keys[0], (56,), jnp.float64)
  cotangent = jax.random.normal(keys[1], (4, 3), jnp.float64)
  np.testing.assert_allclose(curvature.output_jvp(apply_fn, params, x, unravel(tangent)),
                             (jacobian @ tangent).reshape(4, 3), rtol=1e-12)
  np.testing.assert_allclose(ravel_pytree(curvature.output_vjp(apply_fn, params, x,
                                                               cotangent))[0],
                             jacobian.T @ cotangent.reshape(-1), rtol=1e-12)
  np.testing.assert_allclose(curvature.gram_vector_product(apply_fn, params, x, cotangent),
                             (jacobian @ jacobian.T @ cotangent.reshape(-1)).reshape(4, 3),
                             rtol=1e-11)
  outputs, jvp_fn, vjp_fn = curvature.linearize_output(apply_fn, params, x)
  np.testing.assert_allclose(outputs, apply_fn(params, x), rtol=1e-14)
  np.testing.assert_allclose(jvp_fn(vjp_fn(cotangent)),
                             (jacobian @ jacobian.T @ cotangent.reshape(-1)).reshape(4, 3),
                             rtol=1e-11)
