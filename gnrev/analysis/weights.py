"""Weight-space drift from initialisation: per-tensor norm ratio and cosine similarity.

Buffelli et al. (NeurIPS 2024, exact_gn notes 2.2) compare trained weights ``W_T`` with their
initial values ``W_0`` through ``||W_T|| / ||W_0||`` and ``cos(W_0, W_T)``; exact GN moves
the weights far less than Adam or SGD while its NTK changes little.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class WeightDrift(NamedTuple):
  """Per-tensor drift; each field is a pytree like the params with scalar leaves."""
  norm_ratio: Any  # ||W_T||_F / ||W_0||_F (inf where W_0 = 0)
  cosine: Any      # <W_0, W_T> / (||W_0|| ||W_T||) (nan where either is zero)


def _check_same_structure(params: Any, initial_params: Any) -> None:
  if jax.tree.structure(params) != jax.tree.structure(initial_params):
    raise ValueError("params and initial_params must have the same pytree structure; got "
                     f"{jax.tree.structure(params)} and {jax.tree.structure(initial_params)}.")
  for leaf, initial in zip(jax.tree.leaves(params), jax.tree.leaves(initial_params)):
    if jnp.shape(leaf) != jnp.shape(initial):
      raise ValueError(f"Tensor shapes differ: {jnp.shape(leaf)} vs {jnp.shape(initial)}.")


def _drift(current: jax.Array, initial: jax.Array) -> tuple[jax.Array, jax.Array]:
  norm, initial_norm = jnp.linalg.norm(current.ravel()), jnp.linalg.norm(initial.ravel())
  return norm / initial_norm, jnp.vdot(initial, current) / (norm * initial_norm)


def weight_drift(params: Any, initial_params: Any) -> WeightDrift:
  """Per-tensor ``||W_T|| / ||W_0||`` and ``cos(W_0, W_T)``.

  Args:
    params: trained parameters ``W_T`` (any pytree of arrays).
    initial_params: initial parameters ``W_0``, same structure and shapes.

  Returns:
    :class:`WeightDrift` of two pytrees shaped like ``params`` with scalar leaves.

  Example:
    >>> init_params = {"block_0": {"W": jnp.ones((2, 2))}}
    >>> params = {"block_0": {"W": 2.0 * jnp.ones((2, 2))}}
    >>> drift = weight_drift(params, init_params)
    >>> float(drift.norm_ratio["block_0"]["W"]), float(drift.cosine["block_0"]["W"])
    (2.0, 1.0)
  """
  _check_same_structure(params, initial_params)
  pairs = jax.tree.map(_drift, params, initial_params)
  is_pair = lambda node: isinstance(node, tuple)
  return WeightDrift(norm_ratio=jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
                     cosine=jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair))


def weight_drift_summary(params: Any, initial_params: Any) -> dict[str, jax.Array]:
  """Flat ``{name: scalar}`` drift for metric writers: per tensor and over all parameters.

  Keys are ``"norm_ratio/<path>"`` and ``"cosine/<path>"`` with ``<path>`` the ``/``-joined
  pytree keys (e.g. ``"cosine/block_0/F/W"``), plus ``"norm_ratio/global"`` and
  ``"cosine/global"`` over all parameters flattened into one vector.
  """
  drift = weight_drift(params, initial_params)
  summary = {}
  for field in WeightDrift._fields:
    for path, value in jax.tree_util.tree_leaves_with_path(getattr(drift, field)):
      summary[f"{field}/{jax.tree_util.keystr(path, simple=True, separator='/')}"] = value
  flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
  flat_initial = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(initial_params)])
  summary["norm_ratio/global"], summary["cosine/global"] = _drift(flat, flat_initial)
  return summary
