"""FishLeg's PSD block-diagonal Q families, found automatically from a parameter tree.

Every block owns some leaves of the parameter tree, keeps them in an internal layout, and
exposes a PSD-by-construction product ``Q x``, a closed-form ``diag(Q)`` and factors for
``Q = diag(target)`` (used for ``Q_0 = s I`` and the diagonal warm start):

* :class:`KroneckerBlock` for every module holding a ``kernel`` with >= 2 axes (flax ``Dense``,
  ``Conv``, ``DenseGeneral`` with one output axis): the kernel reshaped to
  ``(prod(kernel.shape[:-1]), out)`` with the module's ``bias`` (if any) appended as a last row,
  ``U`` of shape ``(in + 1, out)``. As in the official ``FishLinear``/``FishConv2d`` (Garcia et
  al. 2023; docs/optim.md, "Q families")

  .. math:: Q U = A \\odot \\big(L L^\\top (A \\odot U) R^\\top R\\big),
            \\qquad Q = D_A (L L^\\top \\otimes R^\\top R) D_A,
            \\qquad \\mathrm{diag}(Q)_{ij} = A_{ij}^2 (L \\odot L \\,\\mathbf 1)_i (\\mathbf 1^\\top R \\odot R)_j.

* :class:`DiagonalBlock` for every other leaf: ``Q x = d^2 \\odot x``.
* :class:`FullBlock` (``q_family="full"``): one dense ``Q = C C^T`` over all parameters, for
  small-model studies and the reference tests.

No layer registration: the family is read off the tree's paths. ``lam`` (FishLeg's lambda) is a
dict from block name (the module's path, e.g. ``"Dense_0"``, or the leaf's path) to its factors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

PyTree = Any
Q_FAMILIES = ("kronecker", "diagonal", "full")


def _key_name(entry) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(entry, attribute):
      return str(getattr(entry, attribute))
  return str(entry)


@dataclasses.dataclass(frozen=True)
class KroneckerBlock:
  """Kernel (+ bias) of one layer as ``U`` of shape ``(in [+1], out)``; lam ``{L, R, A}``."""
  name: str
  kernel_index: int
  bias_index: int | None
  kernel_shape: tuple[int, ...]

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

  def factors_for_diagonal(self, target: jax.Array) -> dict:
    rows, cols = self.shape
    return {"L": jnp.eye(rows, dtype=target.dtype), "R": jnp.eye(cols, dtype=target.dtype),
            "A": jnp.sqrt(target)}

  def q_product(self, lam: dict, u: jax.Array) -> jax.Array:
    left, right, scale = lam["L"], lam["R"], lam["A"]
    inner = left @ (left.T @ (scale * u))
    return scale * ((inner @ right.T) @ right)

  def product_cache(self, lam: dict) -> dict:
    return {"LLt": lam["L"] @ lam["L"].T, "RtR": lam["R"].T @ lam["R"]}

  def cached_product(self, lam: dict, cache: dict, u: jax.Array) -> jax.Array:
    return lam["A"] * ((cache["LLt"] @ (lam["A"] * u)) @ cache["RtR"])

  def diagonal(self, lam: dict) -> jax.Array:
    row = jnp.sum(lam["L"]**2, axis=1)
    col = jnp.sum(lam["R"]**2, axis=0)
    return lam["A"]**2 * row[:, None] * col[None, :]


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

  def q_vector_cached(self, lam: dict, cache: dict, v: PyTree) -> PyTree:
    """``Q(lam) v`` from ``cache = product_cache(lam)``; equal to :meth:`q_vector` up to rounding.

    The cache is a snapshot of lam: rebuild it whenever lam changes, and use :meth:`q_vector`
    where gradients with respect to lam are needed.
    """
    return self._apply(
        lambda block, x: block.cached_product(lam[block.name], cache[block.name], x), v)

  def diagonal(self, lam: dict, like: PyTree) -> PyTree:
    """``diag(Q(lam))`` as a tree shaped like ``like`` (closed form per block)."""
    return self._apply(lambda block, x: block.diagonal(lam[block.name]).astype(x.dtype), like)

  def lam_for_diagonal(self, target: PyTree) -> dict:
    """Factors with ``Q = diag(target)`` (``target`` params-shaped, positive)."""
    leaves = self.treedef.flatten_up_to(target)
    return {block.name: block.factors_for_diagonal(block.gather(leaves))
            for block in self.blocks}


def q_family_of(lam: dict) -> str:
  """The Q family (``"full"``, ``"kronecker"`` or ``"diagonal"``) whose blocks made ``lam``.

  Read off the factor names: a full block holds ``C``, a Kronecker block ``L`` (and ``R``, ``A``).
  """
  blocks = [set(factors) for factors in lam.values()]
  return ("full" if any("C" in b for b in blocks) else
          "kronecker" if any("L" in b for b in blocks) else "diagonal")


def q_structure(params: PyTree, q_family: str = "kronecker") -> QStructure:
  """Finds FishLeg's Q blocks for a parameter tree (arrays or ``jax.ShapeDtypeStruct``).

  Args:
    params: a flax-style tree of parameters (nested mappings); only shapes are read.
    q_family: ``"kronecker"`` (per-layer Kronecker blocks for kernels, diagonal for the rest),
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
  blocks, used = [], set()
  if q_family == "kronecker":
    index_of = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
      module, _, leaf_name = name.rpartition("/")
      if leaf_name != "kernel" or len(shapes[i]) < 2:
        continue
      bias = index_of.get(f"{module}/bias" if module else "bias")
      if bias is not None and shapes[bias] != shapes[i][-1:]:
        bias = None
      blocks.append(KroneckerBlock(module or "kernel", i, bias, shapes[i]))
      used.update({i, bias} - {None})
  blocks += [DiagonalBlock(names[i], i, shapes[i]) for i in range(len(names)) if i not in used]
  return QStructure(treedef, tuple(blocks))
