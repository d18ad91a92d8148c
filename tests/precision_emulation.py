"""Reduced-precision matrix products on CPU: what a GPU's TF32 or a TPU's bfloat16 would compute.

On NVIDIA GPUs since Ampere, a float32 ``dot_general`` whose precision is not ``HIGHEST`` runs on
tensor cores with TF32 operands (10 explicit mantissa bits), and a TPU rounds them to bfloat16
(7 bits); the products of the rounded operands are accumulated in float32. The CPU backend
ignores the precision and computes in float32. Inside :func:`reduced_precision_products`,
every float32 ``dot_general`` compiled for the CPU (or a GPU) is lowered instead as: round each
operand whose precision is not ``HIGHEST`` to ``mantissa_bits`` (round to nearest, ties to
even), then a float32 product. The product of two such operands is exact in float32, so this
is the tensor-core arithmetic up to the order of the float32 accumulation. It covers every
product (``@``, ``einsum``, ``vdot``, and those of JVPs and VJPs), because it acts where XLA
programs are built.

Precision ``HIGHEST`` and float64 operands are left alone, as on a GPU. ``DEFAULT``, ``HIGH``
and no precision are rounded (on a GPU ``HIGH`` gives TF32 as well). Named dot algorithms
(``jax.lax.DotAlgorithmPreset``) are left alone.

This reaches into JAX's lowering tables (``jax._src``), which a library must not do and a test
helper may: :func:`check_emulation_works` fails loudly if a JAX upgrade moves them.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import mlir as _mlir_tables
from jax._src.lax import lax as _lax_internal
from jax.interpreters import mlir

TF32_BITS = 10      # NVIDIA tensor cores (Ampere and later), JAX's default on those GPUs
BFLOAT16_BITS = 7   # TPU's default (one bfloat16 pass)
_FLOAT32_BITS = 23
# Emulated on the CPU and, so that these tests mean the same there, on a GPU (whose own DEFAULT
# products would otherwise be real TF32, whatever the mantissa_bits asked for).
_PLATFORMS = ("cpu", "cuda", "rocm")


def round_mantissa(x: jax.Array, mantissa_bits: int) -> jax.Array:
  """Rounds float32 ``x`` to ``mantissa_bits`` explicit mantissa bits (nearest, ties to even)."""
  if not 1 <= mantissa_bits < _FLOAT32_BITS:
    raise ValueError(f"mantissa_bits must be in [1, {_FLOAT32_BITS - 1}], got {mantissa_bits}.")
  dropped = _FLOAT32_BITS - mantissa_bits
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  # Adding half an ulp of the kept bits (less one if the last kept bit is 0) rounds to nearest
  # with ties to even; the carry may move into the exponent, as it should.
  half = jnp.uint32((1 << (dropped - 1)) - 1) + ((bits >> dropped) & jnp.uint32(1))
  kept = (bits + half) & jnp.uint32((0xFFFFFFFF << dropped) & 0xFFFFFFFF)
  return jax.lax.bitcast_convert_type(kept, jnp.float32)


def _operand_precisions(precision) -> tuple[bool, bool]:
  """Whether each operand of a ``dot_general`` would be rounded on a GPU."""
  if precision is None:
    return True, True
  if isinstance(precision, tuple) and all(isinstance(p, jax.lax.Precision) for p in precision):
    return tuple(p != jax.lax.Precision.HIGHEST for p in precision)
  return False, False   # a named dot algorithm says exactly what it computes


@contextlib.contextmanager
def reduced_precision_products(mantissa_bits: int = TF32_BITS):
  """Inside the block, float32 products below ``HIGHEST`` round their operands (module doc).

  Compiled programs are cached by JAX, so the caches are cleared on entry and on exit: a
  function jitted outside the block is recompiled inside it and again after it.
  """
  round_mantissa(jnp.zeros(()), mantissa_bits)   # validates mantissa_bits
  primitive = _lax_internal.dot_general_p
  generic = _mlir_tables._lowerings[primitive]
  saved = {platform: _mlir_tables._platform_specific_lowerings[platform].get(primitive)
           for platform in _PLATFORMS}

  def lowering_for(platform):
    original = saved[platform] or generic

    def lowering(ctx, lhs, rhs, *, dimension_numbers, precision, preferred_element_type,
                 **params):
      rounded = _operand_precisions(precision)
      float32 = [aval.dtype == np.float32 for aval in ctx.avals_in]
      if not any(r and f for r, f in zip(rounded, float32)):
        return original.rule(ctx, lhs, rhs, dimension_numbers=dimension_numbers,
                             precision=precision, preferred_element_type=preferred_element_type,
                             **params)

      def emulated(a, b):
        a, b = (round_mantissa(v, mantissa_bits) if r and f else v
                for v, r, f in zip((a, b), rounded, float32))
        return jax.lax.dot_general(a, b, dimension_numbers,
                                   precision=jax.lax.Precision.HIGHEST,
                                   preferred_element_type=preferred_element_type)

      return mlir.lower_fun(emulated, multiple_results=False)(ctx, lhs, rhs)

    return lowering

  jax.clear_caches()
  for platform in _PLATFORMS:
    mlir.register_lowering(primitive, lowering_for(platform), platform=platform)
  try:
    yield
  finally:
    for platform, entry in saved.items():
      if entry is None:
        _mlir_tables._platform_specific_lowerings[platform].pop(primitive, None)
      else:
        _mlir_tables._platform_specific_lowerings[platform][primitive] = entry
    jax.clear_caches()


def check_emulation_works() -> None:
  """Raises unless the emulation rounds a DEFAULT product and leaves a HIGHEST one alone."""
  x = jnp.asarray([[1.0 + 2.0**-20]], jnp.float32)
  with reduced_precision_products(TF32_BITS):
    fast = float(jnp.matmul(x, x)[0, 0])
    exact = float(jnp.matmul(x, x, precision="highest")[0, 0])
  if fast != 1.0 or exact == 1.0:
    raise AssertionError(f"reduced-precision emulation is broken (got {fast} and {exact}); has "
                         "JAX moved its lowering tables?")
