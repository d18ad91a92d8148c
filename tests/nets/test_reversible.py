"""Pure coupling-block stack: inverse, memory-mode validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import nets


def _blocks(num_blocks, h1, h2, width, key):
  keys = iter(jax.random.split(key, 4 * num_blocks))
  params, fixed = [], []
  for _ in range(num_blocks):
    params.append({
        "F": {"W": 0.5 * jax.random.normal(next(keys), (h1, width), jnp.float64),
              "b": jnp.full((h1,), 0.1, jnp.float64)},
        "G": {"W": 0.5 * jax.random.normal(next(keys), (h2, width), jnp.float64),
              "b": jnp.full((h2,), -0.1, jnp.float64)}})
    fixed.append({"F": {"C": jax.random.normal(next(keys), (h2, width), jnp.float64)},
                  "G": {"C": jax.random.normal(next(keys), (h1, width), jnp.float64)}})
  return tuple(params), tuple(fixed)


@pytest.mark.x64
def test_stack_inverse_undoes_stack_forward_block_by_block():
  params, fixed = _blocks(3, 4, 3, 9, jax.random.key(0))
  x1 = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
  x2 = jax.random.normal(jax.random.key(2), (6, 3), jnp.float64)
  activations = ("identity", "relu", "relu")
  y1, y2 = nets.stack_forward(params, fixed, x1, x2, activations)
  z1, z2 = nets.stack_inverse(params, fixed, y1, y2, activations)
  np.testing.assert_allclose(z1, x1, rtol=0, atol=1e-12)
  np.testing.assert_allclose(z2, x2, rtol=0, atol=1e-12)
  # Coupling order: y1 depends on x2 through F, y2 on y1 through G.
  a1, a2 = nets.coupling_block(params[0], fixed[0], x1, x2, "identity")
  np.testing.assert_allclose(a1, x1 + nets.branch(x2, params[0]["F"], fixed[0]["F"], "identity"))
  np.testing.assert_allclose(a2, x2 + nets.branch(a1, params[0]["G"], fixed[0]["G"], "identity"))


@pytest.mark.x64
def test_invert_mode_gives_input_and_fixed_cotangents_too():
  params, fixed = _blocks(2, 3, 3, 5, jax.random.key(3))
  x1 = jax.random.normal(jax.random.key(4), (4, 3), jnp.float64)
  x2 = jax.random.normal(jax.random.key(5), (4, 3), jnp.float64)

  def loss(mode, *args):
    y1, y2 = nets.reversible_stack(*args, ("relu", "relu"), memory_mode=mode)
    return jnp.sum(jnp.tanh(y1) * y2)

  reference = jax.grad(loss, argnums=(1, 2, 3, 4))("autodiff", params, fixed, x1, x2)
  inverted = jax.grad(loss, argnums=(1, 2, 3, 4))("invert", params, fixed, x1, x2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), inverted,
               reference)


@pytest.mark.x64
def test_unknown_memory_mode_and_mismatched_lengths_are_rejected():
  params, fixed = _blocks(2, 3, 3, 5, jax.random.key(0))
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="allowed: invert, autodiff, remat"):
    nets.reversible_stack(params, fixed, x, x, ("relu", "relu"), memory_mode="magic")
  with pytest.raises(ValueError, match="one per block"):
    nets.reversible_stack(params, fixed, x, x, ("relu",))
