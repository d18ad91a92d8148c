"""Additive coupling blocks as pure functions (Buffelli et al. 2024, docs/nets.md).

A block maps the two halves ``(x1, x2)`` of its input to

.. math::

    y_1 = x_1 + F(x_2), \\qquad y_2 = x_2 + G(y_1),

and is inverted exactly by ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``. Each branch is an
inverted bottleneck with a fixed random expansion ``C`` and a trained contraction
``(W, b)``:

.. math::

    F(u) = \\phi(u C) W^\\top + b, \\qquad A(u) = [\\phi(u C), 1],

so that ``F(u) = A(u) [W, b]^T`` is linear in the trained weights given the feature matrix
``A(u)``. This linearity is what the exact Gauss-Newton sweep exploits. Without expansion
(``C`` absent, the paper's Fig. 5 variant) the branch is ``phi(u) W^T + b``.

Pytree conventions (shared with :class:`gnrev.nets.RevMLP`):

* branch params: ``{"W": (out, M), "b": (out,)}``; branch fixed: ``{"C": (in, M)}`` or ``{}``;
* block params: ``{"F": branch, "G": branch}``; block fixed: ``{"F": {...}, "G": {...}}``;
* ``activation`` is a string key of :data:`ACTIVATIONS`, static under jit.

All functions act on the trailing feature axis and broadcast over leading batch axes.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "identity": lambda u: u,
}


def check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(
        f"Unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}.")


def branch_hidden(u: jax.Array, branch_fixed: Mapping, activation: str) -> jax.Array:
  """``phi(u C)`` (or ``phi(u)`` without expansion): the branch's features before the bias column."""
  pre = u @ branch_fixed["C"] if "C" in branch_fixed else u
  return ACTIVATIONS[activation](pre)


def feature_matrix(u: jax.Array, branch_fixed: Mapping, activation: str) -> jax.Array:
  """``A(u) = [phi(u C), 1]``: the branch output is ``A(u) @ [W, b]^T``."""
  hidden = branch_hidden(u, branch_fixed, activation)
  ones = jnp.ones(hidden.shape[:-1] + (1,), hidden.dtype)
  return jnp.concatenate([hidden, ones], axis=-1)


def branch_output(hidden: jax.Array, branch_params: Mapping) -> jax.Array:
  """The trained contraction ``hidden W^T + b``, linear in ``(W, b)``."""
  return hidden @ branch_params["W"].T + branch_params["b"]


def branch_weights_from_omega(omega: jax.Array) -> dict:
  """Splits an ``(M + 1) x out`` solution of ``A Omega = T`` into branch params ``{W, b}``.

  Inverse of the layout used by :func:`feature_matrix`: ``A Omega == branch_output(hidden, result)``.
  """
  return {"W": omega[:-1].T, "b": omega[-1]}


def branch(u: jax.Array, branch_params: Mapping, branch_fixed: Mapping,
           activation: str) -> jax.Array:
  """One branch ``F(u) = phi(u C) W^T + b``."""
  return branch_output(branch_hidden(u, branch_fixed, activation), branch_params)


def coupling_block(block_params: Mapping, block_fixed: Mapping, x1: jax.Array, x2: jax.Array,
                   activation: str) -> tuple[jax.Array, jax.Array]:
  """Forward of one additive coupling block: ``(x1, x2) -> (y1, y2)``."""
  y1 = x1 + branch(x2, block_params["F"], block_fixed.get("F", {}), activation)
  y2 = x2 + branch(y1, block_params["G"], block_fixed.get("G", {}), activation)
  return y1, y2


def coupling_inverse(block_params: Mapping, block_fixed: Mapping, y1: jax.Array, y2: jax.Array,
                     activation: str) -> tuple[jax.Array, jax.Array]:
  """Exact inverse of :func:`coupling_block`: ``(y1, y2) -> (x1, x2)``."""
  x2 = y2 - branch(y1, block_params["G"], block_fixed.get("G", {}), activation)
  x1 = y1 - branch(x2, block_params["F"], block_fixed.get("F", {}), activation)
  return x1, x2
