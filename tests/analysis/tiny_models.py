"""Tiny models with dense reference quantities for the analysis tests."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def mlp_apply(params, x):
  """A two-layer tanh MLP: ``(n, 3) -> (n, 2)``."""
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return hidden @ params["w2"] + params["b2"]


def mlp_params(key, dtype=jnp.float64, inputs=3, hidden=4, outputs=2):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {"w1": jax.random.normal(k1, (inputs, hidden), dtype),
          "b1": 0.1 * jax.random.normal(k2, (hidden,), dtype),
          "w2": jax.random.normal(k3, (hidden, outputs), dtype) / 2,
          "b2": 0.1 * jax.random.normal(k4, (outputs,), dtype)}


def dense_jacobian(apply_fn, params, x):
  """Materialised Jacobian ``(n * out, num_params)`` of the flattened outputs."""
  flat, unravel = ravel_pytree(params)
  return jax.jacfwd(lambda f: apply_fn(unravel(f), x).ravel())(flat)


def mse_loss(params, x, y):
  return 0.5 * jnp.mean(jnp.sum((mlp_apply(params, x) - y)**2, axis=-1))
