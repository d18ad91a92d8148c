"""FishLeg's PSD block-diagonal Q families, found automatically from a parameter tree.

Every block owns some leaves of the parameter tree, keeps them in an internal layout, and
exposes a PSD-by-construction product ``Q x``, a closed-form ``diag(Q)`` and factors for
``Q = diag(target)`` (used for ``Q_0 = s I`` and the diagonal warm start):

* :class:`KroneckerBlock` for every leaf with >= 2 axes (a Dense or Conv kernel, whatever its
  name: flax ``kernel``, haiku ``w``, a plain dict's ``w1``): the kernel reshaped to
  ``(prod(kernel.shape[:-1]), out)`` with its bias (a 1-D sibling of size ``out``, if any)
  appended as a last row, ``U`` of shape ``(in + 1, out)``. As in the official
  ``FishLinear``/``FishConv2d`` (Garcia et al. 2023; docs/optim.md, "Q families")

  .. math:: Q U = A \\odot \\big(L L^\\top (A \\odot U) R^\\top R\\big),
            \\qquad Q = D_A (L L^\\top \\otimes R^\\top R) D_A,
            \\qquad \\mathrm{diag}(Q)_{ij} = A_{ij}^2 (L \\odot L \\,\\mathbf 1)_i (\\mathbf 1^\\top R \\odot R)_j.

  With ``q_family="kronecker_per_example"`` the block has no elementwise factor,
  ``Q U = L L^T U R^T R`` (the paper-era JAX code's ``MLPLegendreKronDiag``). A dense layer's
  gradient on a batch is ``G = X^T Delta`` (per-example layer inputs ``X``, ``(N, in [+1])``,
  and output gradients ``Delta``, ``(N, out)``, :class:`PerExample`), so then

  .. math:: Q G = (X L L^\\top)^\\top (\\Delta R^\\top R),

  ``2 N (n^2 + m^2 + n m)`` FLOPs from the cached ``L L^T`` and ``R^T R`` instead of the
  ``2 n m (n + m)`` of the weight-shaped product (:meth:`KroneckerBlock.per_example_product`;
  :func:`gnrev.optim.per_example.value_grad_and_per_example` takes ``X`` and ``Delta`` from a
  flax model). Only this product uses them: Q applied to anything else (the aux step's probes
  and residuals) is the weight-shaped product.

* :class:`DiagonalBlock` for every other leaf: ``Q x = d^2 \\odot x``.
* :class:`FullBlock` (``q_family="full"``): one dense ``Q = C C^T`` over all parameters, for
  small-model studies and the reference tests.

No layer registration: blocks are read off the tree's shapes (:func:`q_structure`). ``lam``
(FishLeg's lambda) is a dict from block name (the module's path, e.g. ``"Dense_0"``, or the
leaf's path) to its factors.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

PyTree = Any
Q_FAMILIES = ("kronecker", "kronecker_per_example", "diagonal", "full")


def _key_name(entry) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(entry, attribute):
      return str(getattr(entry, attribute))
  return str(entry)


class PerExample(NamedTuple):
  """A dense layer's gradient in factored form, ``G = inputs^T output_grads`` (bias row aside).

  Rows are examples (or positions: all leading axes flattened). ``output_grads`` are gradients of
  the loss as trained, so a batch-mean loss's ``1 / N`` is already in them.
  """
  inputs: jax.Array  # (N, in), the layer's inputs, without the bias's column of ones
  output_grads: jax.Array  # (N, out), d loss / d (layer outputs)


@dataclasses.dataclass(frozen=True)
class KroneckerBlock:
  """Kernel (+ bias) of one layer as ``U`` of shape ``(in [+1], out)``; lam ``{L, R[, A]}``.

  ``elementwise=False`` drops the factor ``A`` (``Q U = L L^T U R^T R``, the
  ``"kronecker_per_example"`` family), which lets :meth:`per_example_product` apply Q to a
  gradient given in factored form.
  """
  name: str
  kernel_index: int
  bias_index: int | None
  kernel_shape: tuple[int, ...]
  elementwise: bool = True

  @property
  def shape(self) -> tuple[int, int]:
    rows = math.prod(self.kernel_shape[:-1]) + (self.bias_index is not None)
    return rows, self.kernel_shape[-1]

  def gather(self, leaves: Sequence[jax.Array]) -> jax.Array:
    u = leaves[self.kernel_index].reshape(-1, self.kernel_shape[-1])
    if self.bias_index is not None:
      u = jnp.concatenate([u, leaves[self.bias_index][None]], axis=0)
    return u

  def scatter(self, u: jax.Array) -> dict[int, jax.Array]:
    rows = math.prod(self.kernel_shape[:-1])
    out = {self.kernel_index: u[:rows].reshape(self.kernel_shape)}
    if self.bias_index is not None:
      out[self.bias_index] = u[rows]
    return out

  def _scaled(self, lam: dict, u: jax.Array) -> jax.Array:
    return lam["A"] * u if self.elementwise else u

  def factors_for_diagonal(self, target: jax.Array) -> dict:
    """Factors with ``diag(Q) = target``; without ``A``, exact when ``target`` is separable.

    Without the elementwise factor Q is a Kronecker product of diagonals ``diag(l) x diag(r)``
    with ``l`` the row means of ``target`` and ``r`` its column means over its overall mean:
    the separable diagonal with the row and column means of ``target``, exact when
    ``target_ij = a_i b_j`` (e.g. ``Q_0 = s I``).
    """
    rows, cols = self.shape
    if self.elementwise:
      return {"L": jnp.eye(rows, dtype=target.dtype), "R": jnp.eye(cols, dtype=target.dtype),
              "A": jnp.sqrt(target)}
    row, col = jnp.mean(target, axis=1), jnp.mean(target, axis=0) / jnp.mean(target)
    return {"L": jnp.diag(jnp.sqrt(row)), "R": jnp.diag(jnp.sqrt(col))}

  def q_product(self, lam: dict, u: jax.Array) -> jax.Array:
    left, right = lam["L"], lam["R"]
    inner = left @ (left.T @ self._scaled(lam, u))
    return self._scaled(lam, (inner @ right.T) @ right)

  def product_cache(self, lam: dict) -> dict:
    return {"LLt": lam["L"] @ lam["L"].T, "RtR": lam["R"].T @ lam["R"]}

  def cached_product(self, lam: dict, cache: dict, u: jax.Array) -> jax.Array:
    return self._scaled(lam, (cache["LLt"] @ self._scaled(lam, u)) @ cache["RtR"])

  def per_example_product(self, cache: dict, per_example: PerExample) -> jax.Array:
    """``Q G`` for ``G = X^T Delta`` without forming G: ``(X L L^T)^T (Delta R^T R)``.

    ``X`` is ``per_example.inputs`` with a column of ones for the bias. Needs
    ``elementwise=False`` (an elementwise ``A`` does not factor through the examples).
    """
    inputs = self._with_bias_column(per_example.inputs)
    return (inputs @ cache["LLt"]).T @ (per_example.output_grads @ cache["RtR"])

  def per_example_vjp(self, lam: dict, cache: dict, per_example: PerExample, w: jax.Array,
                      precondition: bool) -> dict:
    """:meth:`cached_vjp` for ``u = X^T Delta`` given in factored form, ``y = P^p w S^p``.

    The gradient of ``<y, Q(lam) u>`` with respect to ``{L, R}`` (``y`` held fixed), with
    ``y = P w S`` (``precondition``: the aux step's preconditioned residual, never formed) or
    ``y = w``; ``P = L L^T``, ``S = R^T R`` from the cache. With ``u = X^T Delta`` (``N`` rows)
    every product keeps ``N`` as its inner or outer size:

    .. math:: \\frac{\\partial}{\\partial L} = X^\\top (G L) + G^\\top (X L), \\quad
              G = \\Delta S^{1+p} w^\\top P^p; \\qquad
              \\frac{\\partial}{\\partial R} = (R E)\\,\\Delta + (R \\Delta^\\top) E^\\top, \\quad
              E = S^p w^\\top (X P^{1+p})^\\top,

    about ``N (7 n^2 + 7 m^2 + 2 n m)`` multiply-adds instead of the ``~3 n m (n + m) + n^3 +
    m^3`` of the weight-shaped route (with the preconditioning product). Needs
    ``elementwise=False``.
    """
    inputs, deltas = self._with_bias_column(per_example.inputs), per_example.output_grads
    p, s, left, right = cache["LLt"], cache["RtR"], lam["L"], lam["R"]
    deltas_s = deltas @ s
    if precondition:
      g = (((deltas_s @ s) @ w.T) @ p)
      h = (inputs @ p) @ p
      e = s @ (w.T @ h.T)
    else:
      g = deltas_s @ w.T
      e = w.T @ (inputs @ p).T
    return {"L": inputs.T @ (g @ left) + g.T @ (inputs @ left),
            "R": (right @ e) @ deltas + (right @ deltas.T) @ e.T}

  def _with_bias_column(self, inputs: jax.Array) -> jax.Array:
    if self.bias_index is None:
      return inputs
    return jnp.concatenate([inputs, jnp.ones_like(inputs[:, :1])], axis=1)

  def per_example_is_cheaper(self, num_rows: int) -> bool:
    """Whether :meth:`per_example_product` on ``num_rows`` rows beats :meth:`cached_product`.

    In FLOPs, ``N (n^2 + m^2 + n m) < n m (n + m)``: batches below about two thirds of the
    layer's width (~430 rows for a 1000 x 500 layer, ~670 for 1000 x 1000).
    """
    n, m = self.shape
    return num_rows * (n * n + m * m + n * m) < n * m * (n + m)

  def per_example_vjp_is_cheaper(self, num_rows: int, precondition: bool) -> bool:
    """Whether :meth:`per_example_vjp` on ``num_rows`` rows beats the weight-shaped route.

    In multiply-adds, ``N ((5 + 2p) (n^2 + m^2) + 2 n m) < (2 + p) n m (n + m) + n^3 + m^3``
    (``p = 1`` with the preconditioning product): below about ``0.4 n`` rows for a square
    layer, at any batch below the width where the layer's sides differ.
    """
    n, m = self.shape
    p = int(precondition)
    return (num_rows * ((5 + 2 * p) * (n * n + m * m) + 2 * n * m)
            < (2 + p) * n * m * (n + m) + n**3 + m**3)

  def cached_vjp(self, lam: dict, cache: dict, u: jax.Array, w: jax.Array) -> dict:
    """Gradient of ``<w, Q(lam) u>`` with respect to ``{L, R[, A]}``, from the cache.

    With ``X = A o u``, ``Y = A o w`` (``X = u``, ``Y = w`` without ``A``), ``P = L L^T`` and
    ``S = R^T R``: ``d/dA = w o (P X S) + u o (P Y S)``, ``d/dL = (C + C^T) L`` with
    ``C = X S Y^T`` and ``d/dR = R (B + B^T)`` with ``B = Y^T P X``: three ``(n, m)``-sized
    products with P and with S each, instead of the ~four Q products from the factors that
    autodiff through :meth:`q_product` costs.
    """
    p, s = cache["LLt"], cache["RtR"]
    x, y = self._scaled(lam, u), self._scaled(lam, w)
    px = p @ x
    c = (x @ s) @ y.T
    b = y.T @ px
    grads = {"L": (c + c.T) @ lam["L"], "R": lam["R"] @ (b + b.T)}
    if self.elementwise:
      grads["A"] = w * (px @ s) + u * ((p @ y) @ s)
    return grads

  def diagonal(self, lam: dict) -> jax.Array:
    row = jnp.sum(lam["L"]**2, axis=1)
    col = jnp.sum(lam["R"]**2, axis=0)
    return self._scaled(lam, self._scaled(lam, row[:, None] * col[None, :]))


@dataclasses.dataclass(frozen=True)
class DiagonalBlock:
  """One leaf with ``Q = diag(d^2)``; lam ``{d}`` of the leaf's shape."""
  name: str
  index: int
  leaf_shape: tuple[int, ...]

  def gather(self, leaves):
    return leaves[self.index]

  def scatter(self, x):
    return {self.index: x}

  def factors_for_diagonal(self, target):
    return {"d": jnp.sqrt(target)}

  def q_product(self, lam, x):
    return lam["d"]**2 * x

  def product_cache(self, lam):
    return {}

  def cached_product(self, lam, cache, x):
    return self.q_product(lam, x)

  def cached_vjp(self, lam, cache, u, w):
    return {"d": 2 * lam["d"] * u * w}

  def diagonal(self, lam):
    return lam["d"]**2


@dataclasses.dataclass(frozen=True)
class FullBlock:
  """All leaves raveled into one vector with ``Q = C C^T``; lam ``{C}`` of shape ``(P, P)``."""
  name: str
  leaf_shapes: tuple[tuple[int, ...], ...]

  def gather(self, leaves):
    return jnp.concatenate([leaf.reshape(-1) for leaf in leaves])

  def scatter(self, x):
    out, start = {}, 0
    for index, shape in enumerate(self.leaf_shapes):
      size = math.prod(shape)
      out[index] = x[start:start + size].reshape(shape)
      start += size
    return out

  def factors_for_diagonal(self, target):
    return {"C": jnp.diag(jnp.sqrt(target))}

  def q_product(self, lam, x):
    return lam["C"] @ (lam["C"].T @ x)

  def product_cache(self, lam):
    return {"CCt": lam["C"] @ lam["C"].T}

  def cached_product(self, lam, cache, x):
    return cache["CCt"] @ x

  def cached_vjp(self, lam, cache, u, w):
    return {"C": jnp.outer(w, lam["C"].T @ u) + jnp.outer(u, lam["C"].T @ w)}

  def diagonal(self, lam):
    return jnp.sum(lam["C"]**2, axis=1)


@dataclasses.dataclass(frozen=True)
class QStructure:
  """The blocks covering a parameter tree, plus the tree's structure to map back to it."""
  treedef: Any
  blocks: tuple

  def _apply(self, per_block, tree: PyTree) -> PyTree:
    leaves = self.treedef.flatten_up_to(tree)
    out = [None] * len(leaves)
    for block in self.blocks:
      for index, leaf in block.scatter(per_block(block, block.gather(leaves))).items():
        out[index] = leaf.astype(leaves[index].dtype)
    return self.treedef.unflatten(out)

  def q_vector(self, lam: dict, v: PyTree) -> PyTree:
    """``Q(lam) v`` for a params-shaped ``v``."""
    return self._apply(lambda block, x: block.q_product(lam[block.name], x), v)

  def product_cache(self, lam: dict) -> dict:
    """Products of lam's factors that make ``Q v`` cheaper (``L L^T``, ``R^T R``, ``C C^T``).

    Building it costs about one ``Q v`` per block (``2 (n^3 + m^3)`` against ``4 n m (n + m)``
    FLOPs for a Kronecker block); :meth:`q_vector_cached` then costs half of :meth:`q_vector`.
    Worth it when lam changes less often than Q is applied, as in FishLeg's steps between aux
    steps.
    """
    return {block.name: block.product_cache(lam[block.name]) for block in self.blocks}

  def q_vector_cached(self, lam: dict, cache: dict, v: PyTree,
                      per_example: dict[str, PerExample] | None = None) -> PyTree:
    """``Q(lam) v`` from ``cache = product_cache(lam)``; equal to :meth:`q_vector` up to rounding.

    The cache is a snapshot of lam: rebuild it whenever lam changes, and use :meth:`q_vector`
    where gradients with respect to lam are needed.

    Args:
      lam: the Q factors.
      cache: ``product_cache(lam)``.
      v: params-shaped.
      per_example: block name -> :class:`PerExample` whose ``inputs^T output_grads`` is that
        block's part of ``v`` (``v`` a gradient), for blocks of the ``"kronecker_per_example"``
        family: those where it is cheaper (:meth:`per_example_blocks`) take
        :meth:`KroneckerBlock.per_example_product` and ignore their part of ``v``. Ignored by
        the other families, whose Q does not factor.
    """
    usable = self.per_example_blocks(per_example)

    def product(block, x):
      if block.name in usable:
        return block.per_example_product(cache[block.name], per_example[block.name])
      return block.cached_product(lam[block.name], cache[block.name], x)

    return self._apply(product, v)

  def per_example_blocks(self, per_example: dict[str, PerExample] | None,
                         cheaper=KroneckerBlock.per_example_is_cheaper) -> frozenset[str]:
    """Names of the blocks that apply Q through ``per_example`` (see :meth:`q_vector_cached`).

    Those ``per_example`` names whose factored route costs fewer FLOPs than the weight-shaped
    one at their number of rows: ``cheaper(block, num_rows)``, by default
    :meth:`KroneckerBlock.per_example_is_cheaper` (shapes are static, so this is decided at
    trace time).

    Raises:
      ValueError: when ``per_example`` names a block this family has no factored product for,
        or its shapes do not fit the block's ``(in [+1], out)`` layout.
    """
    factored = {b.name: b for b in self.blocks
                if isinstance(b, KroneckerBlock) and not b.elementwise}
    if not per_example or not factored:
      return frozenset()
    unknown = sorted(set(per_example) - set(factored))
    if unknown:
      raise ValueError(f"per_example names {', '.join(unknown)}, which are not Kronecker blocks "
                       f"of this Q (kernels with >= 2 axes, at most {MAX_KRONECKER_SIDE} a "
                       f"side); allowed: {', '.join(factored)}.")
    for name, terms in per_example.items():
      block = factored[name]
      rows, cols = block.shape
      fan_in = rows - (block.bias_index is not None)
      if (terms.inputs.ndim != 2 or terms.output_grads.shape != (terms.inputs.shape[0], cols)
          or terms.inputs.shape[1] != fan_in):
        raise ValueError(f"per_example[{name!r}] must hold inputs (N, {fan_in}) and "
                         f"output_grads (N, {cols}); got {terms.inputs.shape} and "
                         f"{terms.output_grads.shape}.")
    return frozenset(name for name, terms in per_example.items()
                     if cheaper(factored[name], terms.inputs.shape[0]))

  def q_vector_vjp_cached(self, lam: dict, cache: dict, u: PyTree, w: PyTree,
                          precondition: bool = False,
                          per_example: dict[str, PerExample] | None = None) -> dict:
    """``d <y, Q(lam) u> / d lam`` (lam-shaped, ``y`` held fixed) from ``cache``.

    ``y = w``, or ``y = Q(lam) w`` with ``precondition`` (FishLeg's preconditioned residual).
    Equal to ``jax.vjp(lambda l: q_vector(l, u), lam)[1](y)`` up to rounding, at a fraction of
    its FLOPs (see :meth:`KroneckerBlock.cached_vjp`). Blocks of ``per_example`` (``u``'s part there
    being ``inputs^T output_grads``) where it is cheaper
    (:meth:`KroneckerBlock.per_example_vjp_is_cheaper`) take
    :meth:`KroneckerBlock.per_example_vjp` and never form their part of ``y``.
    """
    usable = self.per_example_blocks(
        per_example, lambda block, rows: block.per_example_vjp_is_cheaper(rows, precondition))
    u_leaves, w_leaves = self.treedef.flatten_up_to(u), self.treedef.flatten_up_to(w)

    def vjp(block):
      factors, products = lam[block.name], cache[block.name]
      if block.name in usable:
        return block.per_example_vjp(factors, products, per_example[block.name],
                                     block.gather(w_leaves), precondition)
      y = block.gather(w_leaves)
      if precondition:
        y = block.cached_product(factors, products, y)
      return block.cached_vjp(factors, products, block.gather(u_leaves), y)

    return {block.name: vjp(block) for block in self.blocks}

  def diagonal(self, lam: dict, like: PyTree) -> PyTree:
    """``diag(Q(lam))`` as a tree shaped like ``like`` (closed form per block)."""
    return self._apply(lambda block, x: block.diagonal(lam[block.name]).astype(x.dtype), like)

  def lam_for_diagonal(self, target: PyTree) -> dict:
    """Factors with ``Q = diag(target)`` (``target`` params-shaped, positive)."""
    leaves = self.treedef.flatten_up_to(target)
    return {block.name: block.factors_for_diagonal(block.gather(leaves))
            for block in self.blocks}


def q_family_of(lam: dict) -> str:
  """The Q family (one of :data:`Q_FAMILIES`) whose blocks made ``lam``.

  Read off the factor names: a full block holds ``C``, a Kronecker block ``L`` and ``R``, and
  ``A`` unless it is of the ``"kronecker_per_example"`` family.
  """
  blocks = [set(factors) for factors in lam.values()]
  return ("full" if any("C" in b for b in blocks) else
          "kronecker" if any("A" in b for b in blocks) else
          "kronecker_per_example" if any("L" in b for b in blocks) else "diagonal")


# Kernels whose factors would be larger than this on a side (e.g. an embedding table's vocabulary)
# get diagonal blocks instead: a side of n costs n^2 memory and n^2 per row of every Q product.
MAX_KRONECKER_SIDE = 4096
_BIAS_NAMES = ("bias", "b")


def _pair_biases(kernels: list[int], candidates: list[int], names: list[str],
                 shapes: list[tuple[int, ...]]) -> dict[int, int]:
  """Kernel index -> bias index among the 1-D leaves of one parent, only where unambiguous.

  A bias is a 1-D sibling of the kernel's output size. With several kernels or candidates in the
  same parent, a candidate is taken when it is the only one of that size, or its name is the
  kernel's with ``w``/``kernel``/``weight`` replaced by ``b``/``bias`` (``w1`` -> ``b1``).
  """
  leaf = lambda i: names[i].rpartition("/")[2]
  pairs, taken = {}, set()
  for k in kernels:
    fits = [c for c in candidates if shapes[c] == shapes[k][-1:] and c not in taken]
    if len(fits) > 1:
      stem = leaf(k)
      wanted = {stem.replace(a, b, 1) for a, b in (("kernel", "bias"), ("weight", "bias"),
                                                  ("w", "b"))} - {stem}
      if len(kernels) == 1:
        wanted |= set(_BIAS_NAMES)
      fits = [c for c in fits if leaf(c) in wanted]
    if len(fits) == 1:
      pairs[k] = fits[0]
      taken.add(fits[0])
  return pairs


def q_structure(params: PyTree, q_family: str = "kronecker") -> QStructure:
  """Finds FishLeg's Q blocks for a parameter tree (arrays or ``jax.ShapeDtypeStruct``).

  Blocks are found by shape, whatever the leaves are called (flax ``kernel``/``bias``, haiku
  ``w``/``b``, plain dicts): every leaf with >= 2 axes is a kernel whose last axis is the output
  (flax/haiku Dense and Conv layouts), reshaped to ``(prod(shape[:-1]), out)``; a 1-D sibling of
  size ``out`` in the same parent is its bias (see :func:`_pair_biases` when a parent holds
  several). Kernels with a side above :data:`MAX_KRONECKER_SIDE` fall back to diagonal blocks,
  and a warning lists them together with 1-D leaves next to kernels that could not be paired.

  Args:
    params: a tree of parameters (nested mappings, lists, ...); only shapes are read.
    q_family: ``"kronecker"`` (per-layer Kronecker blocks for kernels, diagonal for the rest),
      ``"kronecker_per_example"`` (the same blocks without the elementwise factor ``A``),
      ``"diagonal"`` (a diagonal block per leaf) or ``"full"`` (one dense Q; tiny models only).

  Returns:
    The static :class:`QStructure` (hashable, safe to rebuild inside jit).
  """
  if q_family not in Q_FAMILIES:
    raise ValueError(f"Unknown q_family {q_family!r}; allowed: {Q_FAMILIES}.")
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  if not paths_leaves:
    raise ValueError("FishLeg needs at least one parameter; got an empty tree.")
  names = ["/".join(_key_name(e) for e in path) for path, _ in paths_leaves]
  shapes = [tuple(leaf.shape) for _, leaf in paths_leaves]
  if q_family == "full":
    return QStructure(treedef, (FullBlock("full", tuple(shapes)),))
  blocks, used, fell_back = [], set(), []
  if q_family in ("kronecker", "kronecker_per_example"):
    parents: dict[str, list[int]] = {}
    for i, name in enumerate(names):
      parents.setdefault(name.rpartition("/")[0], []).append(i)
    for parent, members in parents.items():
      kernels = [i for i in members if len(shapes[i]) >= 2 and math.prod(shapes[i]) > 0]
      too_big = [i for i in kernels
                 if max(math.prod(shapes[i][:-1]) + 1, shapes[i][-1]) > MAX_KRONECKER_SIDE]
      fell_back += [names[i] for i in too_big]
      kernels = [i for i in kernels if i not in too_big]
      pairs = _pair_biases(kernels, [i for i in members if len(shapes[i]) == 1], names, shapes)
      for k in kernels:
        name = (parent or names[k]) if len(kernels) == 1 else names[k]
        blocks.append(KroneckerBlock(name, k, pairs.get(k), shapes[k],
                                     elementwise=q_family == "kronecker"))
        used.update({k, pairs.get(k)} - {None})
      if kernels:
        fell_back += [names[i] for i in members if len(shapes[i]) == 1 and i not in used]
  if fell_back:
    warnings.warn(f"FishLeg: diagonal Q blocks for {', '.join(fell_back)} (kernels with a side "
                  f"above {MAX_KRONECKER_SIDE}, or 1-D leaves beside a kernel that could not be "
                  f"paired with one as its bias).", stacklevel=2)
  blocks += [DiagonalBlock(names[i], i, shapes[i]) for i in range(len(names)) if i not in used]
  return QStructure(treedef, tuple(blocks))
