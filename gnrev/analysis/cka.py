"""Centred kernel alignment (CKA) between two representations of the same examples.

With Gram matrices ``K`` (of ``X``, ``n x p``) and ``L`` (of ``Y``, ``n x q``),

.. math::

    \\mathrm{CKA}(K, L) = \\frac{\\mathrm{HSIC}(K, L)}{\\sqrt{\\mathrm{HSIC}(K, K)\\,\\mathrm{HSIC}(L, L)}},
    \\qquad \\mathrm{HSIC}(K, L) \\propto \\mathrm{tr}(K H L H), \\quad H = I - \\tfrac{1}{n} 1 1^\\top.

"Debiased" CKA replaces HSIC by its unbiased U-statistic (Song et al. 2012), written as the
inner product of U-centred Gram matrices (Szekely and Rizzo 2014). Minibatch CKA (Nguyen et al.
2021) averages that unbiased HSIC over minibatches before forming the ratio, so it converges to
the full-data value as batches accumulate; its state is a pytree that jitted loops can carry.

References:
  Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
  ICML 2019.
  Nguyen, Raghu, Kornblith, "Do Wide and Deep Networks Learn the Same Things?", ICLR 2021.
  Song et al., "Feature Selection via Dependence Maximization", JMLR 2012 (unbiased HSIC).

Precision: every product here (Gram matrices, cross-covariances, the HSIC inner products) runs
at the keyword ``precision``, ``"highest"`` by default (:func:`gnrev.curvature.matmul_precision`).
A Gram matrix is centred after it is formed, so its product's rounding, relative to the
uncentred entries, is amplified by the ratio of the features' mean to their spread: TF32
products (JAX's default on recent NVIDIA GPUs) moved the linear CKA of ReLU-like features by
1e-5, bfloat16 ones by 2e-4 (docs/precision.md).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

from gnrev.curvature import EXACT_PRECISION, PrecisionLike, check_precision

Representations = Union[jax.Array, Sequence[jax.Array]]


def _check_examples(x: jax.Array, y: jax.Array, minimum: int) -> None:
  if x.ndim != 2 or y.ndim != 2:
    raise ValueError(f"Representations must be (n, features); got {x.shape} and {y.shape}.")
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"Both representations must hold the same n examples; got {x.shape[0]} "
                     f"and {y.shape[0]}.")
  if x.shape[0] < minimum:
    raise ValueError(f"Need at least {minimum} examples for this estimator; got {x.shape[0]}.")


def gram_linear(x: jax.Array, *, precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Linear-kernel Gram matrix ``X X^T`` of ``x`` ``(n, features)``, at ``precision``."""
  return jnp.matmul(x, x.T, precision=check_precision(precision))


def gram_rbf(x: jax.Array, threshold: float = 1.0, *,
             precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """RBF Gram matrix with bandwidth ``threshold`` times the median pairwise distance.

  ``exp(-|x_i - x_j|^2 / (2 threshold^2 median_sq))`` where ``median_sq`` is the median of
  all ``n^2`` squared distances, diagonal zeros included (Kornblith et al.'s convention).

  Args:
    x: features ``(n, features)``.
    threshold: bandwidth as a fraction of the median distance, positive.
    precision: of the product ``X X^T`` the distances come from.

  Returns:
    ``(n, n)`` Gram matrix.
  """
  if isinstance(threshold, (int, float)) and not threshold > 0:
    raise ValueError(f"threshold must be positive; got {threshold}.")
  dot = gram_linear(x, precision=precision)
  sq_norms = jnp.diagonal(dot)
  sq_distances = sq_norms[:, None] + sq_norms[None, :] - 2.0 * dot
  sq_median = jnp.median(sq_distances)
  return jnp.exp(-sq_distances / (2.0 * threshold**2 * sq_median))


def center_gram(gram: jax.Array, unbiased: bool = False) -> jax.Array:
  """Double-centres a symmetric Gram matrix.

  Args:
    gram: ``(n, n)`` symmetric Gram matrix.
    unbiased: if ``False``, return ``H K H``. If ``True``, return the U-centred matrix
      (zero diagonal; off the diagonal ``K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` with
      ``r`` the row sums and ``s`` the total sum of ``K`` with its diagonal zeroed), whose
      inner products are ``n (n - 3)`` times the unbiased HSIC. Needs ``n >= 4``.

  Returns:
    The centred ``(n, n)`` matrix.
  """
  n = gram.shape[0]
  if gram.ndim != 2 or gram.shape[1] != n:
    raise ValueError(f"gram must be square (n, n); got {gram.shape}.")
  if not unbiased:
    column_means = jnp.mean(gram, axis=0)
    row_offsets = column_means - jnp.mean(column_means) / 2.0
    return gram - row_offsets[:, None] - row_offsets[None, :]
  if n < 4:
    raise ValueError(f"Unbiased centring needs n >= 4 examples; got {n}.")
  off_diagonal = 1.0 - jnp.eye(n, dtype=gram.dtype)
  zeroed = gram * off_diagonal
  row_sums = jnp.sum(zeroed, axis=1)
  offsets = row_sums / (n - 2) - jnp.sum(zeroed) / (2.0 * (n - 1) * (n - 2))
  return (zeroed - offsets[:, None] - offsets[None, :]) * off_diagonal


def cka(gram_x: jax.Array, gram_y: jax.Array, debiased: bool = False, *,
        precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """CKA between two Gram matrices over the same ``n`` examples.

  Args:
    gram_x: ``(n, n)`` Gram matrix of the first representation.
    gram_y: ``(n, n)`` Gram matrix of the second representation.
    debiased: use the unbiased HSIC estimator (needs ``n >= 4``).
    precision: of the HSIC inner product.

  Returns:
    Scalar CKA (in ``[0, 1]`` for the biased estimator).

  Example:
    >>> x = jax.random.normal(jax.random.key(0), (10, 3))
    >>> round(float(cka(gram_rbf(x, 0.5), gram_rbf(2.0 * x, 0.5))), 4)  # median bandwidth
    1.0
  """
  if gram_x.shape != gram_y.shape:
    raise ValueError(f"Gram shapes differ: {gram_x.shape} vs {gram_y.shape}.")
  centred_x = center_gram(gram_x, unbiased=debiased)
  centred_y = center_gram(gram_y, unbiased=debiased)
  return jnp.vdot(centred_x, centred_y, precision=check_precision(precision)) / (
      jnp.linalg.norm(centred_x) * jnp.linalg.norm(centred_y))


def linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False, *,
               precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Linear CKA of features ``x`` ``(n, p)`` and ``y`` ``(n, q)`` via ``n x n`` Gram matrices.

  Use :func:`feature_space_linear_cka` when the feature counts are below ``n``; the two agree.
  ``precision``: of every product (module docstring).

  Example:
    >>> hidden_at_init = jax.random.normal(jax.random.key(0), (10, 4))
    >>> rotation = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (4, 4)))[0]
    >>> round(float(linear_cka(hidden_at_init, hidden_at_init @ rotation)), 4)  # rotation-invariant
    1.0
  """
  _check_examples(x, y, 4 if debiased else 1)
  return cka(gram_linear(x, precision=precision), gram_linear(y, precision=precision),
             debiased=debiased, precision=precision)


def rbf_cka(x: jax.Array, y: jax.Array, threshold: float = 1.0, debiased: bool = False, *,
            precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """RBF-kernel CKA, bandwidth ``threshold`` times the median distance (see :func:`gram_rbf`)."""
  _check_examples(x, y, 4 if debiased else 1)
  return cka(gram_rbf(x, threshold, precision=precision),
             gram_rbf(y, threshold, precision=precision), debiased=debiased, precision=precision)


def feature_space_linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False, *,
                             precision: PrecisionLike = EXACT_PRECISION) -> jax.Array:
  """Linear CKA computed in feature space, ``O(n p q)`` instead of ``O(n^2 (p + q))``.

  .. math::

      \\mathrm{CKA} = \\frac{\\|Y^\\top X\\|_F^2}{\\|X^\\top X\\|_F \\|Y^\\top Y\\|_F}
      \\quad \\text{(columns of X, Y centred).}

  For the unbiased HSIC with centred features, zeroing the Gram diagonal gives
  ``tr(K~ L~) = |X^T Y|^2 - a.b``, ``1^T K~ 1 = -|X|_F^2`` and ``1^T K~ L~ 1 = a.b`` with
  ``a_i = |x_i|^2``, ``b_i = |y_i|^2``; so ``n (n-3) HSIC_1 =
  |X^T Y|^2 - n/(n-2) a.b + |X|^2 |Y|^2 / ((n-1)(n-2))``.

  Args:
    x: features ``(n, p)``.
    y: features ``(n, q)``.
    debiased: use the unbiased HSIC estimator (needs ``n >= 4``).
    precision: of the products ``X^T Y`` and of the row norms' inner product.

  Returns:
    Scalar CKA, equal to :func:`linear_cka` with the same ``debiased``.
  """
  _check_examples(x, y, 4 if debiased else 1)
  precision = check_precision(precision)
  n = x.shape[0]
  x = x - jnp.mean(x, axis=0)
  y = y - jnp.mean(y, axis=0)

  def similarity(a, b):
    cross = jnp.sum(jnp.matmul(a.T, b, precision=precision)**2)
    if not debiased:
      return cross
    row_sq_a, row_sq_b = jnp.sum(a**2, axis=1), jnp.sum(b**2, axis=1)
    return (cross - n / (n - 2) * jnp.vdot(row_sq_a, row_sq_b, precision=precision)
            + jnp.sum(row_sq_a) * jnp.sum(row_sq_b) / ((n - 1) * (n - 2)))

  return similarity(x, y) / jnp.sqrt(similarity(x, x) * similarity(y, y))


class MinibatchCKAState(NamedTuple):
  """Running sums of unbiased HSIC over minibatches (Nguyen et al. 2021, eq. 3)."""
  hsic_xy: jax.Array   # (num_x_layers, num_y_layers) sum over batches of HSIC_1(K_i, L_j)
  hsic_xx: jax.Array   # (num_x_layers,) sum over batches of HSIC_1(K_i, K_i)
  hsic_yy: jax.Array   # (num_y_layers,) sum over batches of HSIC_1(L_j, L_j)
  num_batches: jax.Array  # () int32, batches accumulated


def _as_layer_list(representations: Representations, name: str) -> list[jax.Array]:
  layers = [representations] if hasattr(representations, "shape") else list(representations)
  if not layers:
    raise ValueError(f"{name} must be an array or a non-empty sequence of arrays.")
  n = layers[0].shape[0]
  if any(layer.ndim < 2 or layer.shape[0] != n for layer in layers):
    raise ValueError(f"Every {name} layer must be (n, ...) with the same batch size n; got "
                     f"{[layer.shape for layer in layers]}.")
  return layers


def _u_centred_grams(layers: list[jax.Array], precision) -> jax.Array:
  """``(num_layers, n * n)``: each layer's flattened U-centred linear Gram matrix."""
  return jnp.stack([
      center_gram(gram_linear(layer.reshape(layer.shape[0], -1), precision=precision),
                  unbiased=True).ravel()
      for layer in layers])


def minibatch_cka_init(xs: Representations, ys: Representations) -> MinibatchCKAState:
  """Empty accumulator shaped for example batches ``xs`` and ``ys``.

  Args:
    xs: one batch of the first model's representations: an ``(n, ...)`` array or a sequence of
      them (one per layer); only shapes and dtype are read.
    ys: the same for the second model (may be ``xs`` for a layer-by-layer self comparison).

  Returns:
    A zeroed :class:`MinibatchCKAState`.
  """
  xs, ys = _as_layer_list(xs, "xs"), _as_layer_list(ys, "ys")
  dtype = jnp.result_type(*xs, *ys)
  return MinibatchCKAState(
      hsic_xy=jnp.zeros((len(xs), len(ys)), dtype),
      hsic_xx=jnp.zeros((len(xs),), dtype),
      hsic_yy=jnp.zeros((len(ys),), dtype),
      num_batches=jnp.zeros((), jnp.int32))


def minibatch_cka_update(state: MinibatchCKAState, xs: Representations, ys: Representations, *,
                         precision: PrecisionLike = EXACT_PRECISION) -> MinibatchCKAState:
  """Adds one minibatch's unbiased HSIC terms (linear kernel) to the accumulator.

  Args:
    state: accumulator from :func:`minibatch_cka_init` or a previous update.
    xs: the first model's representations of this batch, as in :func:`minibatch_cka_init`.
    ys: the second model's representations of the same examples.
    precision: of the Gram matrices and of the products between them.

  Returns:
    The updated state. Jittable; keep the batch size fixed (``>= 4``) across updates.

  Example:
    >>> batches = jax.random.normal(jax.random.key(0), (3, 8, 5))      # 3 batches of 8
    >>> model_a = lambda x: [x, jnp.tanh(x)]                           # two layers each
    >>> model_b = lambda x: [2.0 * x, x ** 3]
    >>> state = minibatch_cka_init(model_a(batches[0]), model_b(batches[0]))
    >>> for batch in batches:
    ...   state = jax.jit(minibatch_cka_update)(state, model_a(batch), model_b(batch))
    >>> cka_matrix = minibatch_cka_result(state)
    >>> cka_matrix.shape
    (2, 2)
  """
  xs, ys = _as_layer_list(xs, "xs"), _as_layer_list(ys, "ys")
  if (len(xs), len(ys)) != state.hsic_xy.shape:
    raise ValueError(f"State expects {state.hsic_xy.shape} (x layers, y layers); got "
                     f"{(len(xs), len(ys))}.")
  if xs[0].shape[0] != ys[0].shape[0]:
    raise ValueError(f"xs and ys must hold the same examples; got batch sizes {xs[0].shape[0]} "
                     f"and {ys[0].shape[0]}.")
  n = xs[0].shape[0]
  precision = check_precision(precision)
  grams_x, grams_y = _u_centred_grams(xs, precision), _u_centred_grams(ys, precision)
  scale = 1.0 / (n * (n - 3))
  dtype = state.hsic_xy.dtype
  return MinibatchCKAState(
      hsic_xy=state.hsic_xy + (scale * jnp.matmul(grams_x, grams_y.T, precision=precision)
                               ).astype(dtype),
      hsic_xx=state.hsic_xx + (scale * jnp.sum(grams_x**2, axis=1)).astype(dtype),
      hsic_yy=state.hsic_yy + (scale * jnp.sum(grams_y**2, axis=1)).astype(dtype),
      num_batches=state.num_batches + 1)


def minibatch_cka_result(state: MinibatchCKAState) -> jax.Array:
  """Minibatch CKA ``(num_x_layers, num_y_layers)`` from the accumulated HSIC averages.

  The ``1/k`` of the averages cancels in the ratio, so the sums are used directly.
  """
  return state.hsic_xy / jnp.sqrt(state.hsic_xx[:, None] * state.hsic_yy[None, :])
