"""Learning the task tree by clustering task gradients (TreeMAML's Algorithm 2, docs/meta.md).

Tasks are compared by the cosine similarity of their flattened gradients. Three clusterings
produce a ``(depth, n)`` label schedule, coarse to fine:

* ``"otd"``: a non-binary top-down insertion in the spirit of Online Top-Down clustering
  (Menon et al. 2019), run on the host (through ``jax.pure_callback`` under ``jit``);
* ``"average"``: cuts of one average-linkage dendrogram at increasing thresholds on the mean
  similarity between clusters (the offline analogue of OTD's averaged similarities), on the
  host;
* ``"threshold"``: nested single-linkage cuts of the cosine graph at increasing thresholds,
  fully jittable. Single linkage chains: one similar pair is enough to merge two clusters, so
  on noisy few-shot gradients a low threshold joins the whole meta-batch into one cluster.

The paper's exact insertion rule and its constants are unknown to us (docs/meta.md,
TO-FILL); the rule below and every default (``margin``, ``split_threshold``, ``thresholds``,
``center``) are our choices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("otd", "average", "threshold")


def cosine_similarity(task_grads, center: bool = True) -> jax.Array:
  """``(n, n)`` cosine similarity of the flattened per-task gradients.

  With ``center`` the mean gradient over tasks is removed first: the part every task shares
  (e.g. the pull towards the root of the tree) would otherwise make all tasks look alike.
  """
  leaves = jax.tree.leaves(task_grads)
  flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in leaves], axis=1)
  if center:
    flat = flat - flat.mean(axis=0, keepdims=True)
  unit = flat / jnp.maximum(jnp.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
  return unit @ unit.T


def threshold_labels(similarity: jax.Array, thresholds) -> jax.Array:
  """Nested single-linkage cuts: level ``k`` joins tasks linked by similarities ``>= tau_k``.

  With ``tau_1 < tau_2 < ...`` each level's components lie inside the previous level's, so the
  schedule is a tree. A task's id is the smallest task index it reaches through links
  ``similarity[i, j] >= tau`` (its component's smallest index). All levels are found together
  by min-label propagation with pointer jumping (each round a task takes the smallest id among
  its linked tasks, then the id of that id) in one ``lax.while_loop`` that stops when no id
  changes: a few rounds of ``O(depth n^2)`` elementwise work instead of ``ceil(log2 n)``
  ``n x n`` matrix products per level. Jittable.
  """
  num_tasks = similarity.shape[0]
  taus = jnp.asarray(thresholds, similarity.dtype)
  links = (similarity[None] >= taus[:, None, None]) | jnp.eye(num_tasks, dtype=bool)
  start = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32), (taus.shape[0], num_tasks))

  def propagate(labels):
    # ids only decrease and stay reachable, so the fixed point is the smallest reachable index.
    smallest = jnp.min(jnp.where(links, labels[:, None, :], num_tasks), axis=2)
    return jnp.take_along_axis(smallest, smallest, axis=1)

  labels, _ = jax.lax.while_loop(lambda state: jnp.any(state[0] != state[1]),
                                 lambda state: (propagate(state[0]), state[0]),
                                 (propagate(start), start))
  return labels


def average_linkage_labels(similarity: np.ndarray, thresholds) -> np.ndarray:
  """Nested average-linkage cuts: level ``k`` merges clusters whose mean similarity is ``>= tau_k``.

  Agglomerative clustering on the distance ``1 - similarity`` with average linkage, i.e. two
  clusters merge while the mean similarity over all their cross pairs is at least ``tau``.
  Average linkage has no inversions, so cuts at ``tau_1 < tau_2 < ...`` of the one dendrogram
  are nested. Host-side (numpy/scipy).

  Args:
    similarity: ``(n, n)`` numpy similarity matrix.
    thresholds: increasing similarity thresholds, one per level.

  Returns:
    int32 ``(len(thresholds), n)`` labels; ids are each cluster's smallest task index.
  """
  from scipy.cluster import hierarchy
  from scipy.spatial.distance import squareform

  similarity = np.asarray(similarity, np.float64)
  distance = np.clip(1.0 - 0.5 * (similarity + similarity.T), 0.0, None)
  np.fill_diagonal(distance, 0.0)
  tree = hierarchy.linkage(squareform(distance, checks=False), method="average")
  rows = [hierarchy.fcluster(tree, 1.0 - tau, criterion="distance") for tau in thresholds]
  return np.stack([np.argmax(r[:, None] == r[None, :], axis=1) for r in rows]).astype(np.int32)


class _Node:
  """An internal node of the insertion tree; ``children`` hold nodes or task indices."""

  def __init__(self, children):
    self.children = list(children)
    self.members = [t for c in self.children for t in _members(c)]

  def height(self):
    return 1 + max((c.height() for c in self.children if isinstance(c, _Node)), default=0)


def _members(child):
  return child.members if isinstance(child, _Node) else [child]


def _block_sum(similarity, members):
  return similarity[np.ix_(members, members)].sum()


def _inter_child_similarity(node, similarity):
  """``omega(v)``: mean similarity between tasks under different children of ``node``."""
  if len(node.children) < 2:
    return None
  groups = [_members(c) for c in node.children]
  within = sum(_block_sum(similarity, g) for g in groups)
  count = len(node.members) ** 2 - sum(len(g) ** 2 for g in groups)
  return (_block_sum(similarity, node.members) - within) / count


def _cohesion(child, similarity):
  """Mean similarity between distinct tasks under ``child`` (1 for a single task)."""
  members = _members(child)
  if len(members) < 2:
    return 1.0
  return ((_block_sum(similarity, members) - similarity[members, members].sum())
          / (len(members) * (len(members) - 1)))


def otd_labels(similarity: np.ndarray, depth: int, margin: float = 0.05,
               split_threshold: float = 0.0) -> np.ndarray:
  """Non-binary top-down insertion of tasks into a tree of at most ``depth`` internal levels.

  Tasks are inserted in index order, each routed down from the root. At node ``v`` the new
  task ``x`` scores every child ``c`` by its mean similarity ``omega(x, c)``. Let ``omega(v)``
  be the mean similarity between ``v``'s children (``split_threshold`` while ``v`` has one
  child) and ``coh(c)`` the mean similarity inside the best child ``c`` (1 for a task). Then
  ``x``

  * belongs to ``c`` if ``omega(x, c) >= (coh(c) + omega(v)) / 2``: it descends into ``c``,
    and a task leaf ``c`` becomes a new internal node ``{c, x}``;
  * otherwise, if ``omega(x, c) < omega(v) - margin`` and ``v`` is not the root, ``v``'s
    children are closer to each other than to ``x``: ``v`` is pushed down under a new node
    with children ``[v, x]`` (OTD's sibling insertion);
  * otherwise becomes an extra child of ``v`` (the non-binary step).

  Internal nodes deeper than ``depth`` are never created. Row ``k`` of the result holds each
  task's ancestor at depth ``k + 1`` (a task above that depth is its own cluster).

  Args:
    similarity: ``(n, n)`` numpy similarity matrix.
    depth: number of levels (rows) to return.
    margin: tolerance before a node is pushed down.
    split_threshold: stands in for ``omega(v)`` at a node with a single child.

  Returns:
    int32 ``(depth, n)`` labels, ids in ``[0, n)`` (the first task of each cluster).
  """
  similarity = np.asarray(similarity, np.float64)
  num_tasks = similarity.shape[0]
  root = _Node([])
  for x in range(num_tasks):
    node, node_depth, parent, path = root, 0, None, []
    while node.children:
      scores = [similarity[x, _members(c)].mean() for c in node.children]
      best = int(np.argmax(scores))
      child = node.children[best]
      between = _inter_child_similarity(node, similarity)
      between = split_threshold if between is None else between
      if scores[best] >= 0.5 * (_cohesion(child, similarity) + between):
        if isinstance(child, _Node):
          path.append(node)
          node, node_depth, parent = child, node_depth + 1, node
          continue
        if node_depth + 1 <= depth:
          node.children[best] = _Node([child, x])
          path.append(node)
          break
      elif (parent is not None and scores[best] < between - margin
            and node_depth + node.height() <= depth):
        parent.children[parent.children.index(node)] = _Node([node, x])
        break
      node.children.append(x)
      path.append(node)
      break
    else:
      node.children.append(x)
      path.append(node)
    for ancestor in path:
      ancestor.members.append(x)

  labels = np.tile(np.arange(num_tasks, dtype=np.int32), (depth, 1))

  def assign(node, node_depth):
    for child in node.children:
      if isinstance(child, _Node):
        members = child.members
        if node_depth + 1 <= depth:
          labels[node_depth, members] = min(members)
        assign(child, node_depth + 1)

  assign(root, 0)
  return labels


def cluster_tasks(task_grads, depth: int, *, method: str = "otd", num_steps: int | None = None,
                  center: bool = True, margin: float = 0.05, split_threshold: float = 0.0,
                  thresholds=None) -> jax.Array:
  """Learns the task tree from task gradients: ``(num_steps, n)`` int32 labels, coarse to fine.

  Args:
    task_grads: pytree of per-task gradients with a leading task axis ``n``.
    depth: number of learned levels (the tree's internal depth).
    method: ``"otd"`` (host-side non-binary top-down insertion), ``"average"`` (host-side
      average-linkage cuts) or ``"threshold"`` (jittable nested single-linkage). Host methods
      run through ``jax.pure_callback``, so they work under ``jit`` and ``vmap``.
    num_steps: number of rows to return (default ``depth``); rows after ``depth`` are
      singletons, i.e. plain MAML steps at the leaves.
    center: remove the mean task gradient before the cosine (see :func:`cosine_similarity`).
    margin, split_threshold: constants of :func:`otd_labels` (our defaults; the paper's are
      unknown).
    thresholds: increasing cosine thresholds, one per level, for ``"threshold"`` and
      ``"average"``; the default ``k / (depth + 1)`` spacing is our choice.

  Returns:
    int32 labels ``(num_steps, n)``; no gradient flows through them.

  Example:
    >>> grads = {"w": jnp.array([[1.0, 0.1], [0.9, 0.0], [-1.0, 0.1], [-0.9, 0.0]])}
    >>> cluster_tasks(grads, depth=1, num_steps=2, method="average", thresholds=(0.0,)).tolist()
    [[0, 0, 2, 2], [0, 1, 2, 3]]

  References:
    Garcia et al., arXiv 2103.04691, Algorithm 2; Menon et al., "Online Hierarchical
    Clustering Approximations", arXiv 1909.09667.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown clustering method {method!r}; allowed: {list(METHODS)}.")
  if int(depth) < 1:
    raise ValueError(f"depth must be a positive number of levels, got {depth}.")
  num_steps = depth if num_steps is None else num_steps
  if num_steps < depth:
    raise ValueError(f"num_steps={num_steps} must be >= depth={depth}.")
  similarity = cosine_similarity(jax.lax.stop_gradient(task_grads), center=center)
  num_tasks = similarity.shape[0]
  if method in ("threshold", "average"):
    thresholds = [k / (depth + 1) for k in range(1, depth + 1)] if thresholds is None else list(
        thresholds)
    if len(thresholds) != depth or any(b <= a for a, b in zip(thresholds, thresholds[1:])):
      raise ValueError(f"thresholds must be {depth} strictly increasing values, got {thresholds}.")
  if method == "threshold":
    learned = threshold_labels(similarity, thresholds)
  else:
    host = (functools.partial(average_linkage_labels, thresholds=thresholds)
            if method == "average" else
            functools.partial(otd_labels, depth=depth, margin=margin,
                              split_threshold=split_threshold))
    learned = jax.pure_callback(
        lambda s: host(np.asarray(s)), jax.ShapeDtypeStruct((depth, num_tasks), jnp.int32),
        similarity, vmap_method="sequential")
  singles = jnp.broadcast_to(jnp.arange(num_tasks, dtype=jnp.int32),
                             (num_steps - depth, num_tasks))
  return jnp.concatenate([learned, singles])


def adjusted_rand_indices(true: np.ndarray, used: np.ndarray) -> np.ndarray:
  """ARI of the used vs the true labels per batch and inner step, ``(batches, K)``.

  ``true`` is ``(batches, D, n)``, ``used`` ``(batches, K, n)``; rows beyond ``D`` compare with
  singletons (the leaves).
  """
  from sklearn.metrics import adjusted_rand_score  # pylint: disable=import-outside-toplevel
  extra = used.shape[1] - true.shape[1]
  if extra > 0:
    leaves = np.broadcast_to(np.arange(true.shape[-1]), (true.shape[0], extra, true.shape[-1]))
    true = np.concatenate([true, leaves], axis=1)
  return np.array([[adjusted_rand_score(t, u) for t, u in zip(tb, ub)]
                   for tb, ub in zip(true, used)])
