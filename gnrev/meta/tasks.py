"""Tree-structured regression tasks whose meta-batches are whole subtrees (docs/meta.md).

Each meta-batch draws a fresh tree with branching ``b_1, ..., b_D``; its ``prod(b)`` leaves
are the tasks. Every node adds an offset with standard deviation ``level_stds[l]`` at depth
``l + 1`` to its parent's task parameter, so tasks sharing ancestors are similar. The
paper's generator is unknown to us (docs/meta.md): every constant here is our
default and a constructor argument.

* ``"linear"``: ``y = w^T x + eps``, ``x ~ N(0, I_dim)``, ``w = w_root + sum of offsets``,
  ``w_root ~ N(0, root_std^2 I)``.
* ``"sinusoid"``: ``y = A sin(x + phi) + eps``, ``x ~ U[-5, 5]``, MAML's ranges for the root
  (``A_root ~ U[0.1, 5]``, ``phi_root ~ U[0, pi]``), ``A`` clipped to ``[0.1, 5]``; amplitude
  offsets use ``level_stds``, phase offsets ``phase_level_stds``.

With ``hierarchical=False`` all the offset variance moves to the leaves (same total), so the
tasks are flat and the "true tree" labels are arbitrary groups: where TreeMAML stops helping.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("linear", "sinusoid")


def tree_labels(branching: Sequence[int]) -> np.ndarray:
  """Labels ``(D, n)`` of a complete tree: row ``l`` groups leaves by their depth-``l+1`` node."""
  num_tasks = math.prod(branching)
  rows = []
  for level in range(len(branching)):
    group = math.prod(branching[level + 1:])
    rows.append((np.arange(num_tasks) // group) * group)
  return np.stack(rows).astype(np.int32)


class HierarchicalRegression:
  """Samples meta-batches ``(support, query, labels)`` from a random task tree.

  Args:
    kind: ``"linear"`` or ``"sinusoid"``.
    branching: children per node at each depth; tasks per meta-batch = their product.
    level_stds: offset standard deviation per depth (amplitude offsets for the sinusoid).
    phase_level_stds: phase offset standard deviation per depth (sinusoid only; default half
      of ``level_stds``).
    dim: input dimension of the linear tasks.
    root_std: standard deviation of the linear root ``w_root``.
    noise_std: observation noise.
    num_support, num_query: points per task.
    hierarchical: ``False`` puts all offset variance at the leaves (flat tasks).

  Example:
    >>> gen = HierarchicalRegression("linear", branching=(4, 4, 4))
    >>> support, query, labels = gen.sample(jax.random.key(0))
    >>> support[0].shape, labels.shape
    ((64, 5, 8), (3, 64))
  """

  def __init__(self, kind: str = "linear", branching: Sequence[int] = (4, 4, 4),
               level_stds: Sequence[float] = (1.0, 0.5, 0.25),
               phase_level_stds: Sequence[float] | None = None, dim: int = 8,
               root_std: float = 1.0, noise_std: float = 0.1, num_support: int = 5,
               num_query: int = 10, hierarchical: bool = True):
    if kind not in KINDS:
      raise ValueError(f"Unknown task kind {kind!r}; allowed: {list(KINDS)}.")
    branching = tuple(int(b) for b in branching)
    if not branching or min(branching) < 1:
      raise ValueError(f"branching must be positive integers, one per depth; got {branching}.")
    if phase_level_stds is None:
      phase_level_stds = tuple(0.5 * s for s in level_stds)
    for name, stds in (("level_stds", level_stds), ("phase_level_stds", phase_level_stds)):
      if len(stds) != len(branching):
        raise ValueError(f"{name} needs one value per depth ({len(branching)}), got {stds}.")
    self.kind, self.branching = kind, branching
    self.level_stds = self._flatten(level_stds, hierarchical)
    self.phase_level_stds = self._flatten(phase_level_stds, hierarchical)
    self.dim, self.root_std, self.noise_std = dim, root_std, noise_std
    self.num_support, self.num_query = num_support, num_query
    self.num_tasks = math.prod(branching)
    self.labels = tree_labels(branching)

  @staticmethod
  def _flatten(stds, hierarchical):
    stds = tuple(float(s) for s in stds)
    if hierarchical:
      return stds
    return (0.0,) * (len(stds) - 1) + (math.sqrt(sum(s * s for s in stds)),)

  def _path_sums(self, key, stds, width):
    """Sum of node offsets along each leaf's path, ``(n, width)``."""
    total = jnp.zeros((self.num_tasks, width))
    for level, (std, key_l) in enumerate(zip(stds, jax.random.split(key, len(stds)))):
      num_nodes = math.prod(self.branching[:level + 1])
      offsets = std * jax.random.normal(key_l, (num_nodes, width))
      total = total + jnp.repeat(offsets, self.num_tasks // num_nodes, axis=0)
    return total

  def task_parameters(self, key):
    """Per-task parameters: ``w`` ``(n, dim)`` (linear) or ``(amplitude, phase)`` ``(n, 2)``."""
    key_root, key_amp, key_phase = jax.random.split(key, 3)
    if self.kind == "linear":
      w_root = self.root_std * jax.random.normal(key_root, (self.dim,))
      return w_root + self._path_sums(key_amp, self.level_stds, self.dim)
    amp_root = jax.random.uniform(key_root, (), minval=0.1, maxval=5.0)
    phase_root = jax.random.uniform(jax.random.fold_in(key_root, 1), (), maxval=jnp.pi)
    amplitude = jnp.clip(amp_root + self._path_sums(key_amp, self.level_stds, 1), 0.1, 5.0)
    phase = phase_root + self._path_sums(key_phase, self.phase_level_stds, 1)
    return jnp.concatenate([amplitude, phase], axis=1)

  def _points(self, key, task_params, num_points):
    key_x, key_noise = jax.random.split(key)
    noise = self.noise_std * jax.random.normal(key_noise, (self.num_tasks, num_points))
    if self.kind == "linear":
      x = jax.random.normal(key_x, (self.num_tasks, num_points, self.dim))
      return x, jnp.einsum("npd,nd->np", x, task_params) + noise
    x = jax.random.uniform(key_x, (self.num_tasks, num_points, 1), minval=-5.0, maxval=5.0)
    y = task_params[:, None, 0] * jnp.sin(x[..., 0] + task_params[:, None, 1])
    return x, y + noise

  def sample(self, key):
    """One meta-batch: ``support = (x, y)`` with ``x (n, k_s, d)``, ``y (n, k_s)``; ``query``
    alike with ``k_q`` points; ``labels`` the true tree, int32 ``(D, n)``. Jittable and
    vmappable over keys."""
    key_tree, key_support, key_query = jax.random.split(key, 3)
    task_params = self.task_parameters(key_tree)
    support = self._points(key_support, task_params, self.num_support)
    query = self._points(key_query, task_params, self.num_query)
    return support, query, jnp.asarray(self.labels)


# Learners of the regression tasks (a family with its own model, e.g. LanguageTasks, brings its
# own loss_fn and init_params).

def linear_loss(params, batch):
  """Mean squared error of the linear model ``x w + b`` on one task's ``(x, y)``."""
  x, y = batch
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def mlp_loss(params, batch):
  """Mean squared error on one task's ``(x, y)`` of the ReLU MLP of
  :func:`init_regression_params`."""
  x, y = batch
  h = x
  for layer in params["hidden"]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


def init_regression_params(model: str, dim: int, hidden: Sequence[int], key: jax.Array):
  """Meta-parameters: zeros for ``linear``; He-initialised ReLU layers for ``mlp`` (scalar x)."""
  if model == "linear":
    return {"w": jnp.zeros(dim), "b": jnp.zeros(())}
  sizes = (1,) + tuple(hidden)
  keys = jax.random.split(key, len(sizes))
  layers = [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
  out = {"w": jax.random.normal(keys[-1], (sizes[-1],)) / jnp.sqrt(sizes[-1]), "b": jnp.zeros(())}
  return {"hidden": layers, "out": out}
