"""The precision of matrix products whose results are factorised, truncated or compared.

On NVIDIA GPUs since Ampere, XLA runs a float32 matrix product with TensorFloat-32 operands
(10 explicit mantissa bits, unit roundoff ``2^-11 ~ 4.9e-4``) unless a higher precision is asked
for; TPUs round float32 operands to bfloat16 (7 bits, ``2^-8 ~ 3.9e-3``). A product
``A B`` of ``k`` terms then carries an error of order ``u sqrt(k) |A| |B|`` instead of
float32's ``u = 2^-24 ~ 6e-8``. That is harmless in a gradient step, and fatal where the product
is a Gram matrix ``A A^T`` that is Cholesky- or eigen-decomposed (its eigenvalues below
``u s_max^2`` are noise, so a singular value below ``sqrt(u) s_max ~ 2e-2 s_max`` cannot be
resolved at TF32), or a kernel compared with another to 1e-6.

gnrev's methods whose products feed a factorisation, a truncation decision or a reference
comparison therefore take a keyword ``precision`` (default ``"highest"``: float32 products run in
float32 everywhere) and compute under :func:`matmul_precision`, which also covers the products
inside the user's model and its JVPs and VJPs. Lowering it (``"high"``, ``"default"``, or
``None`` for JAX's ambient default) trades that accuracy for tensor-core speed on purpose.
Float64 products are never rounded by XLA. docs/precision.md lists the methods and the costs.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Union

import jax

PRECISIONS = ("highest", "high", "default")
EXACT_PRECISION = "highest"

PrecisionLike = Optional[Union[str, jax.lax.Precision]]


def check_precision(precision: PrecisionLike) -> Optional[str]:
  """The name of a matrix-product precision, or None to keep JAX's ambient default.

  Args:
    precision: one of :data:`PRECISIONS`, a ``jax.lax.Precision`` member, or None.

  Returns:
    ``"highest"``, ``"high"``, ``"default"`` or None.

  Raises:
    ValueError: for anything else, naming the allowed values.
  """
  if precision is None:
    return None
  if isinstance(precision, jax.lax.Precision):
    return precision.name.lower()
  if isinstance(precision, str) and precision in PRECISIONS:
    return precision
  raise ValueError(
      f"Unknown matrix-product precision {precision!r}; allowed: {', '.join(PRECISIONS)}, a "
      "jax.lax.Precision member, or None (JAX's default: TF32 products on recent NVIDIA GPUs, "
      "bfloat16 on TPUs).")


def matmul_precision(precision: PrecisionLike) -> ContextManager:
  """A context under which every matrix product traced runs at ``precision``.

  It sets ``jax.default_matmul_precision`` while a function is traced, so it reaches the products
  of the user's model and of its JVPs and VJPs too, inside ``jax.jit`` as outside; products that
  state their own precision keep it. None leaves JAX's ambient default in place.

  Example:
    >>> x = jax.numpy.ones((4, 3))
    >>> with matmul_precision("highest"):
    ...   gram = x @ x.T                        # float32 products even on a GPU or a TPU
    >>> float(gram[0, 0])
    3.0
  """
  name = check_precision(precision)
  return contextlib.nullcontext() if name is None else jax.default_matmul_precision(name)
