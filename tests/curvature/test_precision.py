"""The precision helper and the test suite's reduced-precision emulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import curvature
from tests.precision_emulation import (BFLOAT16_BITS, TF32_BITS, check_emulation_works,
                                       reduced_precision_products, round_mantissa)


@pytest.mark.parametrize("given,name", [("highest", "highest"), ("default", "default"),
                                        (jax.lax.Precision.HIGH, "high"), (None, None)])
def test_check_precision_names_the_allowed_values(given, name):
  assert curvature.check_precision(given) == name


@pytest.mark.parametrize("bad", ["tf32", "HIGHEST", 3])
def test_check_precision_rejects_anything_else_naming_what_is_allowed(bad):
  with pytest.raises(ValueError, match="allowed: highest, high, default"):
    curvature.check_precision(bad)


def _dot_precisions(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  return [eqn.params["precision"] for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]


def test_matmul_precision_reaches_every_product_traced_inside_it_including_jvps():
  x = jnp.ones((3, 3))

  def model_and_tangent(x):
    with curvature.matmul_precision("highest"):
      return jax.jvp(lambda a: jnp.tanh(a @ a.T) @ a, (x,), (x,))

  highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
  precisions = _dot_precisions(model_and_tangent, x)
  assert len(precisions) >= 4 and all(p == highest for p in precisions)
  with curvature.matmul_precision(None):   # the ambient default stays
    assert _dot_precisions(lambda a: a @ a, x) == [None]


def test_round_mantissa_to_seven_bits_is_bfloat16_rounding():
  x = jax.random.normal(jax.random.key(0), (1000,), jnp.float32) * 1e3
  np.testing.assert_array_equal(round_mantissa(x, BFLOAT16_BITS),
                                x.astype(jnp.bfloat16).astype(jnp.float32))
  tf32 = round_mantissa(x, TF32_BITS)
  relative = np.abs(np.asarray(tf32 - x) / np.asarray(x))
  assert 0 < relative.max() <= 2.0**-11


def test_emulation_rounds_only_inside_its_block():
  check_emulation_works()
  x = jnp.asarray([[1.0 + 2.0**-20]], jnp.float32)
  square = jax.jit(lambda a: a @ a)
  before = float(square(x)[0, 0])
  with reduced_precision_products(TF32_BITS):
    inside = float(square(x)[0, 0])
  assert before != 1.0 and inside == 1.0 and float(square(x)[0, 0]) == before
