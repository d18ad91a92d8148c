"""The exact GN step and the truncated solver's kept rank under emulated GPU/TPU products.

float32 runs inside :func:`tests.precision_emulation.reduced_precision_products` are compared
with float64 references: at the default ``precision="highest"`` the step is as accurate as on a
CPU, and lowering it on purpose degrades it visibly (so these tests fail if the policy is lost).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import gn, nets
from gnrev.curvature import matmul_precision
from gnrev.gn import sweep
from tests.gn.tiny_revmlp import tiny_problem
from tests.precision_emulation import (BFLOAT16_BITS, TF32_BITS, check_emulation_works,
                                       reduced_precision_products)

# Measured on the tiny problem below: float32 at "highest" is 1.8e-6 from the float64 step, TF32
# products ("default" on a recent NVIDIA GPU) 1.4e-3.
STEP_TOLERANCE = 2e-5


def _float32(tree):
  return jax.tree.map(lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating)
                      else a, tree)


@pytest.mark.x64
def test_exact_gn_step_keeps_float32_accuracy_under_tf32_products_unless_lowered():
  check_emulation_works()
  model, variables, x, labels, _ = tiny_problem()
  reference, _ = gn.exact_gn_direction(model, variables, x, labels)
  reference = ravel_pytree(reference)[0]
  model32, variables32, x32 = model.clone(param_dtype=jnp.float32), _float32(variables), _float32(x)

  def step_error(**precision):
    step = jax.jit(lambda v, inputs: gn.exact_gn_direction(model32, v, inputs, labels,
                                                           **precision))
    direction, info = step(variables32, x32)
    flat = ravel_pytree(direction)[0]
    assert flat.dtype == jnp.float32
    return float(jnp.linalg.norm(flat - reference) / jnp.linalg.norm(reference)), info

  with reduced_precision_products(TF32_BITS):
    kept, info = step_error()
    lowered, _ = step_error(precision="default")
  assert kept < STEP_TOLERANCE and float(info["residual"]) < STEP_TOLERANCE
  assert lowered > 20 * STEP_TOLERANCE, lowered


@pytest.mark.x64
def test_dense_reference_step_keeps_float32_accuracy_under_tf32_products_unless_lowered():
  keys = jax.random.split(jax.random.key(0), 3)
  params = {"w1": jax.random.normal(keys[0], (6, 8), jnp.float64) / 2,
            "w2": jax.random.normal(keys[1], (8, 2), jnp.float64) / 3}
  x = jax.random.normal(keys[2], (4, 6), jnp.float64)
  y = jnp.arange(4) % 2
  apply_fn = lambda p, inputs: jnp.tanh(inputs @ p["w1"]) @ p["w2"]
  reference = ravel_pytree(gn.dense_gn_direction(apply_fn, params, x, y))[0]

  def error(**precision):
    direction = gn.dense_gn_direction(apply_fn, _float32(params), _float32(x), y, **precision)
    flat = ravel_pytree(direction)[0]
    return float(jnp.linalg.norm(flat - reference) / jnp.linalg.norm(reference))

  with reduced_precision_products(TF32_BITS):
    kept, lowered = error(), error(precision="default")
  assert kept < STEP_TOLERANCE and lowered > 20 * STEP_TOLERANCE, (kept, lowered)


def test_transforms_check_the_precision_at_construction():
  model = nets.RevMLP(num_blocks=1, expansion=8, num_classes=2)
  with pytest.raises(ValueError, match="allowed: highest, high, default"):
    gn.exact_gn(0.1, model=model, precision="tf32")
  gn.exact_gn(0.1, model=model, precision=jax.lax.Precision.HIGH)


RTOL = 1e-2


def _branch_with_spectrum(margin, batch=32, expansion=48, seed=0):
  """Dense features whose ``A = [hidden, 1]`` has two singular values at ``(1 +- margin)`` times
  the cut ``RTOL s_max``, among a geometric spectrum (as image features have) on either side."""
  rng = np.random.default_rng(seed)
  # Columns orthogonal to the ones column: A's singular values are s and sqrt(batch) (= s_max).
  left = np.linalg.qr(np.concatenate([np.ones((batch, 1)), rng.normal(size=(batch, batch - 1))],
                                     axis=1))[0][:, 1:]
  right = np.linalg.qr(rng.normal(size=(expansion, expansion)))[0][:batch - 1]
  top = np.sqrt(batch)
  s = top * np.concatenate([np.geomspace(0.9, 0.03, 12), RTOL * np.array([1 + margin, 1 - margin]),
                            np.geomspace(7e-3, 1e-4, batch - 15)])
  hidden = left @ np.diag(s) @ right
  kept = 1 + 12 + 1   # s_max, the 12 values above the cut and the one just above it
  return hidden, kept, rng.normal(size=(batch, 3))


def _kept_rank(hidden, target, precision):
  def solve(h, t):
    with matmul_precision(precision):   # as exact_gn_direction runs its branch solves
      return sweep.solve_branch(sweep.BranchFeatures(h, None, None, None), t, "svd", RTOL, 0.0,
                                0.0, True)
  return int(jax.jit(solve)(jnp.asarray(hidden, jnp.float32), jnp.asarray(target, jnp.float32)
                            ).rank)


@pytest.mark.x64
def test_gram_solver_kept_rank_is_the_float64_rank_unless_products_are_lowered():
  # Singular values 0.3% either side of the cut: float32's Gram resolves them (its relative
  # error there is about eps (s_max / cut)^2 / 2 = 6e-4); bfloat16 products (a TPU's default)
  # move them by about 1% and change the decision. TF32 products kept it in this case.
  hidden, kept, target = _branch_with_spectrum(margin=3e-3)
  dense = np.concatenate([hidden, np.ones((hidden.shape[0], 1))], axis=1)
  singular_values = np.linalg.svd(dense, compute_uv=False)
  assert int(np.sum(singular_values > RTOL * singular_values[0])) == kept
  for bits in (TF32_BITS, BFLOAT16_BITS):
    with reduced_precision_products(bits):
      assert _kept_rank(hidden, target, "highest") == kept
  with reduced_precision_products(BFLOAT16_BITS):
    assert _kept_rank(hidden, target, "default") != kept
