"""Summaries that tell whether a Gauss-Newton step can be trusted."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def direction_summary(direction: Any) -> dict:
  """``finite`` (every entry finite, bool) and ``direction_norm`` (global 2-norm) of a step."""
  leaves = jax.tree.leaves(direction)
  return {
      "finite": jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])),
      "direction_norm": jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in leaves)),
  }


def relative_error(value: jax.Array, reference: jax.Array) -> jax.Array:
  """``||value - reference|| / ||reference||`` (``||value||`` when the reference is zero)."""
  scale = jnp.linalg.norm(reference)
  error = jnp.linalg.norm(value - reference)
  return jnp.where(scale > 0, error / jnp.where(scale > 0, scale, 1), error)
