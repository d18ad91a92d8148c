"""The exact Gauss-Newton step for a RevMLP: a right inverse of the Jacobian, block by block.

Buffelli et al. (NeurIPS 2024); docs/gn.md. Every branch ``F(u) = A(u) [W, b]^T`` is linear
in its trained weights given its feature matrix ``A(u) = [phi(u C), 1]`` (``n x (M + 1)``). If
every ``A`` has full row rank ``n``, a branch can realise any change ``T`` of its output with
``Omega = A^+ T``. The sweep walks the blocks from the last to the first, carrying the target
change ``(T1, T2)`` of the block's output, and for each block:

1. gets the block's input (kept from the forward pass, or rebuilt by inverting the block);
2. F-branch: ``Omega_F = A_F^+ (w T1)``, so ``y1`` changes by ``w T1``;
3. cross term: ``K = G'(y1)[A_F Omega_F]``, the change of ``y2`` that the F update causes through G;
4. G-branch: ``Omega_G = A_G^+ (w T2 - K)``, so ``y2`` changes by ``w T2``;
5. pulls the target back through the block with the weights fixed:
   ``S2 = T2 - G'(y1)[T1]``, ``S1 = T1 - F'(x2)[S2]``, the target of the previous block.

Block ``l`` thus moves the network output by ``w_l T_L``; the whole step moves the logits by
``sum_l w_l`` times the output-space Newton target ``t = -H^+ g``, and solves the Gauss-Newton
equations ``J^T H J D = -J^T g`` exactly (``J`` surjective, ``J D = t``). It is a right-inverse
solution, generally not the min-norm one (:func:`gnrev.gn.min_norm_gn_direction`).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from gnrev.curvature import EXACT_PRECISION, PrecisionLike, matmul_precision, output_jvp
from gnrev.gn.diagnostics import direction_summary, relative_error
from gnrev.gn.targets import check_loss, newton_target
from gnrev.nets import (branch, branch_hidden, branch_output, branch_weights_from_omega,
                        coupling_inverse, flatten_inputs, split_sizes, stack_forward)

SOLVERS = ("cholesky", "svd", "thin_svd", "damped")
ALLOCATIONS = ("full", "split")

# The "svd" solver's Gram path. A A^T squares the condition number: its float rounding (of order
# eps s_max^2) moves the kept eigenvalues by a relative eps (s_max / s_min_kept)^2, our estimate
# of the step's error; above GRAM_MAX_ERROR the branch is solved by an SVD instead. Measured at
# the paper's MNIST size in float32 (rtol 1e-2: estimate 1.2e-3), the Gram step was 1.4e-3
# (relative) from the float64 SVD step, mostly from modes next to the cut, which the Gram cannot
# separate (a random target on one ReLU branch: 1.9e-2; the float32 thin SVD: 4e-6); at rtol 4e-3
# (estimate 7.5e-3) it was 7e-2, hence the threshold between the two.
GRAM_MAX_ERROR = 2e-3
SVD_PATHS = ("gram", "svd")   # info["svd_path"] holds the index


def allocation_weights(allocation: Union[str, Sequence[float]], num_blocks: int,
                       dtype) -> jax.Array:
  """The share ``w_l`` of the target that block ``l`` realises.

  ``"full"``: ``w_l = 1`` (the official code: the logits move by ``L t``); ``"split"``:
  ``w_l = 1 / L`` (the logits move by ``t``); or ``num_blocks`` explicit weights.
  """
  if isinstance(allocation, str):
    if allocation not in ALLOCATIONS:
      raise ValueError(
          f"Unknown allocation {allocation!r}; allowed: {', '.join(ALLOCATIONS)} or a sequence "
          f"of {num_blocks} per-block weights.")
    value = 1.0 if allocation == "full" else 1.0 / num_blocks
    return jnp.full((num_blocks,), value, dtype)
  weights = jnp.asarray(allocation, dtype)
  if weights.shape != (num_blocks,):
    raise ValueError(
        f"Explicit allocation weights must have shape ({num_blocks},) (one per block), got "
        f"{weights.shape}.")
  return weights


def check_batch_fits(model, batch_size: int, features: int, solver: str) -> None:
  """Raises if some branch feature matrix cannot have full row rank and the solver needs it.

  ``A = [phi(u C), 1]`` has at most ``M + 1`` independent rows, and only ``min(in, M) + 1`` when
  ``phi`` is the identity (the linear first block). The Cholesky solver factorises ``A A^T``, which
  is singular then; ``"svd"`` and ``"damped"`` run and report the residual instead.
  """
  if solver != "cholesky":
    return
  h1, h2 = split_sizes(features)
  for block, activation in enumerate(model.activations):
    for name, in_features in (("F", h2), ("G", h1)):
      width = in_features if model.expansion is None else model.expansion
      max_rank = (min(in_features, width) if activation == "identity" else width) + 1
      if batch_size > max_rank:
        width_name = "input half" if model.expansion is None else "expansion"
        why = (f"block {block} is linear, so its feature matrices have rank <= "
               f"min(input half, {width_name}) + 1 = {max_rank}" if activation == "identity" else
               f"the feature matrices have at most {width_name} + 1 = {max_rank} independent "
               f"rows")
        raise ValueError(
            f"Batch size {batch_size} is too large for the exact (cholesky) GN step: {why} "
            f"(branch {name} of block {block}), so A A^T is singular. Use a batch of at most "
            f"{max_rank}, a wider model, or solver='svd' / 'damped' (inexact; info reports the "
            f"residual).")


class BranchSolution(NamedTuple):
  """Least-squares solution of ``A Omega = T`` for one branch."""
  direction: dict                           # {"W": (out, M), "b": (out,)}
  realised: jax.Array                       # A Omega, (n, out): T itself when the solve is exact
  min_singular_value: Optional[jax.Array]   # n-th singular value of A (0 if n > M + 1)
  rank: Optional[jax.Array]                 # int32 numerical rank (after the svd truncation)
  path: Optional[jax.Array]                 # int32, "svd" only: index into SVD_PATHS


class BranchFeatures(NamedTuple):
  """A branch's feature matrix ``A = [phi(u C), 1]`` (``n x (M + 1)``) in the form its solve uses.

  Dense (``hidden`` set): ``hidden = phi(u C)``; ``A A^T = hidden hidden^T + 1 1^T``.
  Factorised (``hidden`` None; a linear branch whose input is at most half the expansion, like
  the paper's first block): ``A = [u, 1] blockdiag(C, 1)`` has rank at most ``in + 1``. With
  ``L L^T = C C^T`` (Cholesky), ``A = Q Z`` where ``Q = [u L, 1]`` is ``n x (in + 1)`` and
  ``Z = blockdiag(L^{-1} C, 1)`` has orthonormal rows, so ``A`` has the singular values of ``Q``
  and ``A^+ = Z^T Q^+``: every solve runs on ``Q`` and the ``n x M`` features are never formed.
  """
  hidden: Optional[jax.Array]     # phi(u C), (n, M); None when factorised
  q: Optional[jax.Array]          # [u L, 1], (n, in + 1), when factorised
  expansion: Optional[jax.Array]  # C, (in, M), when factorised
  chol: Optional[jax.Array]       # L, lower triangular (in, in), when factorised


def _is_factorised(branch_fixed: Mapping, activation: str) -> bool:
  """Static rule: factorise a linear branch whose input is at most half its expansion.

  ``C C^T`` is then well conditioned (for Gaussian ``C`` its condition number is at most
  ``((1 + 1/sqrt 2) / (1 - 1/sqrt 2))^2 ~ 34``) and the factorised products are cheaper.
  """
  c = branch_fixed.get("C")
  return activation == "identity" and c is not None and 2 * c.shape[0] <= c.shape[1]


def branch_features(u: jax.Array, branch_fixed: Mapping, activation: str) -> BranchFeatures:
  """The feature matrix of the branch at input ``u`` (see :class:`BranchFeatures`)."""
  if not _is_factorised(branch_fixed, activation):
    return BranchFeatures(branch_hidden(u, branch_fixed, activation), None, None, None)
  c = branch_fixed["C"]
  chol = jnp.linalg.cholesky(c @ c.T)
  q = jnp.concatenate([u @ chol, jnp.ones_like(u[:, :1])], axis=-1)
  return BranchFeatures(None, q, c, chol)


def _features_shape(features: BranchFeatures) -> tuple[int, int]:
  """``A``'s shape ``(n, M + 1)``."""
  if features.hidden is not None:
    return features.hidden.shape[0], features.hidden.shape[1] + 1
  return features.q.shape[0], features.expansion.shape[1] + 1


def _apply_branch(features: BranchFeatures, u: jax.Array, branch_params: Mapping) -> jax.Array:
  """The branch output ``A [W, b]^T``; a factorised branch computes ``u (C W^T) + b``."""
  if features.hidden is not None:
    return branch_output(features.hidden, branch_params)
  return u @ (features.expansion @ branch_params["W"].T) + branch_params["b"]


class _GramSystem(NamedTuple):
  """``A Omega = T`` reduced to a symmetric PSD ``S``: ``Omega = finish(f(S) rhs)``."""
  gram: jax.Array   # S: A A^T (n x n) or, factorised with in + 1 < n, Q^T Q
  left: bool        # S = A A^T: f(S) T is alpha and Omega = A^T alpha


# Row blocks of the Gram product: the products on and below the block diagonal are computed and
# the rest is their transpose, 2 n^2 M (k + 1) / (2 k) FLOPs instead of 2 n^2 M.
GRAM_ROW_BLOCKS = 4
_MIN_GRAM_BLOCK_ROWS = 128


def symmetric_gram(matrix: jax.Array, row_blocks: int = GRAM_ROW_BLOCKS) -> jax.Array:
  """``matrix @ matrix.T``, computing only the lower block triangle (XLA has no ``syrk``).

  Exactly symmetric. Falls back to one product when blocks would have fewer than 128 rows.
  """
  rows = matrix.shape[0]
  size = -(-rows // row_blocks)
  if row_blocks < 2 or size < _MIN_GRAM_BLOCK_ROWS:
    return matrix @ matrix.T
  lower = []
  for start in range(0, rows, size):
    stop = min(start + size, rows)
    # Row block i against every row up to the end of block i, in one product.
    strip = matrix[start:stop] @ matrix[:stop].T
    lower.append(jnp.pad(strip, ((0, 0), (0, rows - stop))))
  lower = jnp.concatenate(lower)
  block = jnp.arange(rows) // size
  return jnp.where(block[:, None] >= block[None, :], lower, lower.T)


def _gram_system(features: BranchFeatures) -> _GramSystem:
  if features.hidden is not None:
    # A A^T = hidden hidden^T + 1 1^T, without materialising A.
    return _GramSystem(symmetric_gram(features.hidden) + 1, True)
  q = features.q
  if q.shape[1] < q.shape[0]:
    return _GramSystem(q.T @ q, False)
  return _GramSystem(q @ q.T, True)


def _z_transpose(features: BranchFeatures, y: jax.Array) -> jax.Array:
  """``Z^T y`` for a factorised branch: ``[C^T L^{-T} y_1; y_2]``, ``(M + 1) x out``."""
  inner = jax.scipy.linalg.solve_triangular(features.chol.T, y[:-1], lower=False)
  return jnp.concatenate([features.expansion.T @ inner, y[-1:]])


def _finish(features: BranchFeatures, system: _GramSystem, y: jax.Array):
  """``(Omega, A Omega)`` from ``y = f(S) rhs``."""
  if features.hidden is not None:
    omega = jnp.concatenate([features.hidden.T @ y, jnp.sum(y, axis=0, keepdims=True)])
    return omega, system.gram @ y
  if system.left:
    projected = features.q.T @ y
    return _z_transpose(features, projected), system.gram @ y
  return _z_transpose(features, y), features.q @ y


def _rhs(features: BranchFeatures, system: _GramSystem, target: jax.Array) -> jax.Array:
  return target if system.left else features.q.T @ target


def _svd_solve(features: BranchFeatures, target: jax.Array, rtol, atol):
  """Truncated ``A^+ T`` from the thin SVD of ``A`` (of ``Q`` when factorised).

  Returns ``(Omega, A Omega, singular values, keep mask)``.
  """
  shape = _features_shape(features)
  if features.hidden is not None:
    matrix = jnp.concatenate([features.hidden, jnp.ones_like(features.hidden[:, :1])], axis=-1)
  else:
    matrix = features.q
  u, s, vt = jnp.linalg.svd(matrix, full_matrices=False)
  keep = s > _cutoff(s, shape, rtol, atol)
  projected = jnp.where(keep[:, None], u.T @ target, 0)
  y = vt.T @ (projected / jnp.where(keep, s, 1)[:, None])
  omega = y if features.hidden is not None else _z_transpose(features, y)
  return omega, u @ projected, s, keep


def _gram_pinv_solve(features: BranchFeatures, target: jax.Array, rtol, atol):
  """Truncated ``A^+ T`` from the eigendecomposition of the Gram ``S`` (SVD fallback).

  The singular values are ``sqrt(eig(S))``, cut as the SVD cuts them, and ``A^+ T`` is
  ``A^T V diag(1 / lambda) V^T T`` over the kept pairs (``S = A A^T``; for ``S = Q^T Q``:
  ``Z^T V diag(1 / lambda) V^T Q^T T``). From the error estimate ``eps (s_max / s_min_kept)^2``
  the branch takes one of :data:`SVD_PATHS`: the Gram up to ``GRAM_MAX_ERROR``, else the thin SVD
  of ``A`` (of ``Q`` when factorised), chosen inside jit with ``lax.cond`` (only one runs).

  Returns ``(Omega, A Omega, n-th singular value, rank, path)``.
  """
  shape = _features_shape(features)
  system = _gram_system(features)
  eigenvalues, vectors = jnp.linalg.eigh(system.gram)
  eigenvalues = jnp.clip(eigenvalues, 0)
  sigma = jnp.sqrt(eigenvalues)
  cut = _cutoff(sigma, shape, rtol, atol)
  keep = sigma > cut
  smallest_kept = jnp.min(jnp.where(keep, sigma, jnp.inf))
  estimate = jnp.finfo(sigma.dtype).eps * (jnp.max(sigma) / smallest_kept) ** 2
  inverse = jnp.where(keep, 1 / jnp.where(keep, eigenvalues, 1), 0)

  def by_gram(_):
    rhs = _rhs(features, system, target)
    y = vectors @ (inverse[:, None] * (vectors.T @ rhs))
    omega, realised = _finish(features, system, y)
    return omega, realised, _nth_singular_value(sigma, shape[0]), jnp.sum(keep, dtype=jnp.int32)

  def by_svd(_):
    omega, realised, s, kept = _svd_solve(features, target, rtol, atol)
    return omega, realised, _nth_singular_value(s, shape[0]), jnp.sum(kept, dtype=jnp.int32)

  use_svd = estimate > GRAM_MAX_ERROR
  omega, realised, smallest, rank = jax.lax.cond(use_svd, by_svd, by_gram, None)
  return omega, realised, smallest, rank, use_svd.astype(jnp.int32)


def solve_branch(features: BranchFeatures, target: jax.Array, solver: str, rtol, atol, damping,
                 diagnostics: bool) -> BranchSolution:
  """Solves ``A Omega = target`` for the branch's ``A`` with the chosen pseudo-inverse.

  ``"cholesky"``: ``Omega = A^T (A A^T)^{-1} T`` (min-norm, exact for full row rank);
  ``"damped"``: ``A^T (A A^T + damping I)^{-1} T`` (Tikhonov / Levenberg-Marquardt);
  ``"svd"`` and ``"thin_svd"``: truncated ``A^+ T`` dropping singular values below
  ``max(rtol s_max, atol)`` and below the rounding level ``eps max(A.shape) s_max``, from the
  Gram's eigendecomposition (replaced by the SVD where it would be inaccurate,
  :func:`_gram_pinv_solve`) or always
  from the thin SVD of ``A``.
  """
  shape = _features_shape(features)
  if solver == "thin_svd":
    omega, realised, s, keep = _svd_solve(features, target, rtol, atol)
    return BranchSolution(branch_weights_from_omega(omega), realised,
                          _nth_singular_value(s, shape[0]), jnp.sum(keep, dtype=jnp.int32), None)
  if solver == "svd":
    omega, realised, smallest, rank, path = _gram_pinv_solve(features, target, rtol, atol)
    return BranchSolution(branch_weights_from_omega(omega), realised, smallest, rank, path)
  system = _gram_system(features)
  shift = damping if solver == "damped" else 0
  factor = jax.scipy.linalg.cho_factor(
      system.gram + shift * jnp.eye(system.gram.shape[0], dtype=system.gram.dtype), lower=True)
  y = jax.scipy.linalg.cho_solve(factor, _rhs(features, system, target))
  omega, realised = _finish(features, system, y)
  solution = BranchSolution(branch_weights_from_omega(omega), realised, None, None, None)
  if not diagnostics:
    return solution
  # Eigenvalues of the Gram carry rounding errors of order eps * lambda_max, hence the rank cutoff
  # on the eigenvalues, not on their square roots.
  eigenvalues = jnp.clip(jnp.linalg.eigvalsh(system.gram), 0)
  rank = jnp.sum(eigenvalues > _cutoff(eigenvalues, shape), dtype=jnp.int32)
  return solution._replace(
      min_singular_value=_nth_singular_value(jnp.sqrt(eigenvalues), shape[0]), rank=rank)


def _nth_singular_value(singular_values, rows: int):
  """The smallest of the ``rows`` singular values full row rank needs (0 if some are missing)."""
  if singular_values.shape[0] < rows:
    return jnp.zeros((), singular_values.dtype)
  return jnp.min(singular_values)


def _cutoff(singular_values, shape, rtol=0.0, atol=0.0):
  largest = jnp.max(singular_values)
  noise = jnp.finfo(singular_values.dtype).eps * max(shape) * largest
  return jnp.maximum(jnp.maximum(rtol * largest, atol), noise)


def _branch_jvp(u: jax.Array, features: BranchFeatures, tangent: jax.Array,
                branch_params: Mapping, branch_fixed: Mapping, activation: str) -> jax.Array:
  """``F'(u)[tangent]``: the change of a branch's output when its input moves (weights fixed).

  Written out for the two activations so that it reuses the features of the forward pass
  (ReLU's mask is ``hidden > 0``) and, for a linear branch, multiplies by the small ``C W^T``
  (``in x out``) instead of passing ``n x M`` intermediates; ``jax.jvp`` otherwise.
  """
  w, c = branch_params["W"], branch_fixed.get("C")
  if activation == "identity":
    return tangent @ (w.T if c is None else c @ w.T)
  if activation == "relu" and features.hidden is not None:
    pre = tangent if c is None else tangent @ c
    return jnp.where(features.hidden > 0, pre, 0) @ w.T
  return jax.jvp(lambda v: branch(v, branch_params, branch_fixed, activation), (u,),
                 (tangent,))[1]


class BlockInputs(NamedTuple):
  """What the sweep needs from one block's forward pass."""
  x1: jax.Array                 # first input half (only used to continue the inverse sweep)
  x2: jax.Array                 # F's input
  y1: jax.Array                 # G's input
  features_f: BranchFeatures    # A_F = [phi(x2 C_F), 1]
  features_g: BranchFeatures    # A_G = [phi(y1 C_G), 1]


def _block_forward(params, fixed, x1, x2, activation) -> tuple[BlockInputs, jax.Array]:
  """A coupling block's forward pass that keeps its branch features for the sweep."""
  features_f = branch_features(x2, fixed.get("F", {}), activation)
  y1 = x1 + _apply_branch(features_f, x2, params["F"])
  features_g = branch_features(y1, fixed.get("G", {}), activation)
  y2 = x2 + _apply_branch(features_g, y1, params["G"])
  return BlockInputs(x1, x2, y1, features_f, features_g), y2


def _inverted_block(params, fixed, y1, y2, activation) -> BlockInputs:
  """A block's inputs and features rebuilt from its output (no stored activations)."""
  x1, x2 = coupling_inverse(params, fixed, y1, y2, activation)
  return BlockInputs(x1, x2, y1, branch_features(x2, fixed.get("F", {}), activation),
                     branch_features(y1, fixed.get("G", {}), activation))


def _block_gn_step(params, fixed, activation, inputs: BlockInputs, t1, t2, weight, solve,
                   exact_f: bool, pull_back: bool):
  """Steps 2-5 of the sweep for one block: its direction, solutions and pulled-back target."""
  g_along = lambda tangent: _branch_jvp(inputs.y1, inputs.features_g, tangent, params["G"],
                                        fixed.get("G", {}), activation)
  f = solve(inputs.features_f, weight * t1)
  # An exact F-solve realises w T1, so the cross term is w G'(y1)[T1]: one jvp serves the cross
  # term and the pull-back (docs/gn.md, cost).
  g_of_t1 = g_along(t1) if (exact_f or pull_back) else None
  cross = weight * g_of_t1 if exact_f else g_along(f.realised)
  g = solve(inputs.features_g, weight * t2 - cross)
  pulled_back_target = None
  if pull_back:
    s2 = t2 - g_of_t1
    s1 = t1 - _branch_jvp(inputs.x2, inputs.features_f, s2, params["F"], fixed.get("F", {}),
                          activation)
    pulled_back_target = (s1, s2)
  return {"F": f.direction, "G": g.direction}, (f, g), pulled_back_target


def _blocks_as_params(model, variables, features: int, blocks: tuple) -> Any:
  """Places per-block pytrees where :meth:`RevMLP.stack_variables` reads them from ``params``."""
  def select(params):
    return model.apply({**variables, "params": params}, features, method=model.stack_variables)[0]
  return jax.linear_transpose(select, variables["params"])(blocks)[0]


def exact_gn_direction(model, variables: Mapping, x: jax.Array, y: jax.Array,
                       loss: str = "ce_identity", allocation: Union[str, Sequence[float]] = "full",
                       solver: str = "cholesky", rtol=0.0, atol=0.0, damping=0.0,
                       keep_activations: bool = True, diagnostics: bool = True,
                       precision: PrecisionLike = EXACT_PRECISION):
  """The exact Gauss-Newton direction of a :class:`gnrev.nets.RevMLP` (Buffelli et al. 2024).

  The logits move by ``J D = (sum_l w_l) t`` with ``t = -H^+ g`` the output-space Newton target
  of ``loss`` (:mod:`gnrev.gn.targets`), exactly when every branch feature matrix has full row
  rank and nothing is truncated. ``D`` is a descent step: use ``params + eta * D``.

  Args:
    model: a :class:`gnrev.nets.RevMLP` (any ``memory_mode``; the sweep uses its pure blocks).
    variables: ``{"params": ..., "fixed": ...}`` as returned by ``model.init``.
    x: inputs ``(n, ...)``; flattened to ``(n, d)``.
    y: integer labels ``(n,)`` or float targets ``(n, c)`` (one-hot or soft).
    loss: ``"ce_identity"`` (``p - y``, the official code's rule), ``"ce"`` (exact softmax-CE
      Hessian pseudo-inverse) or ``"mse"``.
    allocation: ``"full"`` (every block realises the whole target: step ``L t``, the official
      code), ``"split"`` (``w_l = 1/L``: step ``t``) or one weight per block.
    solver: ``"cholesky"`` (exact, needs every feature matrix of full row rank: batch at most
      expansion + 1 and, for a linear first block, at most half the input size + 1; checked),
      ``"svd"`` (truncated pseudo-inverse with ``rtol``/``atol``, the official code's numerics,
      computed from the eigendecomposition of the Gram ``A A^T``; by the error estimate
      ``eps (s_max / s_min_kept)^2`` a branch falls back to an SVD, reported in
      ``info["svd_path"]``; in float32 the step is about 1e-3 from the float64 step at the
      paper's truncation), ``"thin_svd"`` (the same truncated pseudo-inverse
      from the thin SVD of ``A``, always; slower) or ``"damped"``
      (``A^T (A A^T + damping I)^{-1}``, a Levenberg-Marquardt step).
    rtol, atol: truncation of the ``"svd"`` / ``"thin_svd"`` solvers (official configs: 1e-2 and
      1e-5).
    damping: Tikhonov damping of the ``"damped"`` solver.
    keep_activations: keep each block's inputs and features from the forward pass (faster). If
      False, they are rebuilt by inverting the blocks from the output, so no activations are held
      across depth (the paper's memory-saving sweep); both give the same direction.
    diagnostics: also compute the function-space residual (one jvp through the network) and the
      singular values of every feature matrix (one ``eigvalsh`` of ``A A^T`` per branch unless
      the solver is ``"svd"`` or ``"thin_svd"``).
    precision: of every matrix product of the sweep, the network's forward pass, JVPs and
      diagnostics included (:func:`gnrev.curvature.matmul_precision`). ``"highest"`` (default)
      keeps float32 products in float32 on GPUs and TPUs, as the Gram factorisations and the
      truncation need; ``"high"``, ``"default"`` or None (JAX's default: TF32 on recent NVIDIA
      GPUs) are faster there and put the exactness at risk (the ``"svd"`` solver's error
      estimate assumes float32 products; docs/precision.md). No effect on a CPU.

  Returns:
    ``(direction, info)``: ``direction`` has the structure of ``variables["params"]``; ``info``
    holds ``finite`` (bool), ``direction_norm``, ``function_space_scale`` (``sum_l w_l``) and,
    with diagnostics, ``residual`` (``||J D - s t|| / ||s t||``), ``min_singular_value`` and
    ``rank`` (numerical rank), each ``(L, 2)`` for the F and G branches of every block; with
    ``solver="svd"``, ``svd_path`` (int32 ``(L, 2)``: index into ``gn.sweep.SVD_PATHS``, 0 the
    Gram, 1 the SVD).

  Example:
    >>> from gnrev import nets
    >>> x, labels = jax.random.normal(jax.random.key(0), (4, 8)), jnp.arange(4) % 2
    >>> model = nets.RevMLP(num_blocks=2, expansion=16, num_classes=2)
    >>> variables = model.init(jax.random.key(1), x)
    >>> direction, info = exact_gn_direction(model, variables, x, labels, loss="ce_identity")
    >>> params = jax.tree.map(lambda p, d: p + 0.1 * d, variables["params"], direction)
    >>> bool(info["residual"] < 1e-4)                    # n = 4 <= d/2 + 1: exact
    True

  References:
    Buffelli, McGowan et al., "Exact, Tractable Gauss-Newton Optimization in Deep Reversible
    Architectures Reveal Poor Generalization", NeurIPS 2024, section 3 (eqs. 16-17).
  """
  with matmul_precision(precision):
    return _exact_gn_direction(model, variables, x, y, loss, allocation, solver, rtol, atol,
                               damping, keep_activations, diagnostics)


def _exact_gn_direction(model, variables, x, y, loss, allocation, solver, rtol, atol, damping,
                        keep_activations, diagnostics):
  check_loss(loss)
  if solver not in SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}.")
  if solver == "cholesky" and isinstance(damping, (int, float)) and damping != 0:
    raise ValueError("solver='cholesky' solves exactly; for damping > 0 use solver='damped'.")
  x = flatten_inputs(x)
  batch_size, features = x.shape
  check_batch_fits(model, batch_size, features, solver)
  blocks_params, blocks_fixed, head = model.apply(variables, features,
                                                  method=model.stack_variables)
  x = x.astype(head.dtype)
  weights = allocation_weights(allocation, model.num_blocks, head.dtype)
  activations = model.activations
  h1, _ = split_sizes(features)

  stored = []
  y1, y2 = x[:, :h1], x[:, h1:]
  if keep_activations:
    for params, fixed, activation in zip(blocks_params, blocks_fixed, activations):
      inputs, y2 = _block_forward(params, fixed, y1, y2, activation)
      stored.append(inputs)
      y1 = inputs.y1
  else:
    y1, y2 = stack_forward(blocks_params, blocks_fixed, y1, y2, activations)
  logits = jnp.concatenate([y1, y2], axis=-1) @ head

  target = newton_target(loss, logits, y)
  lifted = target @ head.T  # min-norm change of the last block's output (U^T U = I)
  t1, t2 = lifted[:, :h1], lifted[:, h1:]

  solve = lambda hidden, t: solve_branch(hidden, t, solver, rtol, atol, damping, diagnostics)
  blocks_direction, solutions = [None] * model.num_blocks, [None] * model.num_blocks
  for block in reversed(range(model.num_blocks)):
    params, fixed, activation = blocks_params[block], blocks_fixed[block], activations[block]
    inputs = (stored[block] if keep_activations else
              _inverted_block(params, fixed, y1, y2, activation))
    blocks_direction[block], solutions[block], pulled_back = _block_gn_step(
        params, fixed, activation, inputs, t1, t2, weights[block], solve,
        exact_f=solver == "cholesky", pull_back=block > 0)
    if block > 0:
      t1, t2 = pulled_back
      y1, y2 = inputs.x1, inputs.x2
  direction = _blocks_as_params(model, variables, features, tuple(blocks_direction))

  info = {**direction_summary(direction), "function_space_scale": jnp.sum(weights)}
  if solver == "svd":
    info["svd_path"] = jnp.array([[solution.path for solution in block] for block in solutions],
                                 jnp.int32)
  if diagnostics:
    autodiff = model.clone(memory_mode="autodiff")
    apply_fn = lambda p, inputs: autodiff.apply({**variables, "params": p}, inputs)
    realised = output_jvp(apply_fn, variables["params"], x, direction)
    wanted = info["function_space_scale"] * target
    info["residual"] = relative_error(realised, wanted)
    info["min_singular_value"] = jnp.array(
        [[solution.min_singular_value for solution in block] for block in solutions])
    info["rank"] = jnp.array([[solution.rank for solution in block] for block in solutions],
                             jnp.int32)
  return direction, info

