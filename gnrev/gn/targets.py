"""Output-space Newton targets ``t = -H^+ g``, one per sample (docs/gn.md).

For a loss summed (or averaged) over samples, the Gauss-Newton step in function space is
``J D = t`` with ``t_i = -H_i^+ g_i``, where ``g_i`` and ``H_i`` are the gradient and Hessian of
sample ``i``'s loss with respect to its logits ``z_i``. A batch-mean factor ``1/n`` cancels
between ``H`` and ``g``, so the rules do not depend on the reduction:

* ``"mse"``: ``1/2 ||z - y||^2`` (or any positive multiple): ``H^+ g = z - y``;
* ``"ce"``: softmax cross-entropy with its exact Hessian ``H = diag(p) - p p^T``. Its min-norm
  solution is ``H^+ (p - y) = m 1 - y / p`` with ``m = mean_k(y_k / p_k)`` (for targets summing to
  one). ``y / p`` is computed as ``y exp(logsumexp(z) - z)``, so no softmax underflows; it still
  grows like ``1 / p_target`` on confidently wrong samples, which is the rule's nature;
* ``"ce_identity"``: cross-entropy with ``H`` replaced by the identity: ``p - y`` (the default of
  the official code, Buffelli et al. 2024).

Targets ``y`` are either integer labels ``(n,)`` or float targets ``(n, c)`` (one-hot or soft,
rows summing to one for the CE rules).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("mse", "ce", "ce_identity")


def check_loss(loss: str) -> None:
  if loss not in LOSSES:
    raise ValueError(f"Unknown loss {loss!r}; allowed: {', '.join(LOSSES)}.")


def as_targets(y: jax.Array, logits: jax.Array) -> jax.Array:
  """Float targets shaped like ``logits``: integer labels ``(n,)`` become one-hot rows."""
  y = jnp.asarray(y)
  if jnp.issubdtype(y.dtype, jnp.integer):
    if y.shape != logits.shape[:1]:
      raise ValueError(
          f"Integer labels must have shape (batch,) = {logits.shape[:1]}, got {y.shape}.")
    return jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
  if y.shape != logits.shape:
    raise ValueError(
        f"Float targets must have the logits' shape {logits.shape} (or pass integer labels of "
        f"shape {logits.shape[:1]}), got {y.shape}.")
  return y.astype(logits.dtype)


def pinv_hessian_gradient(loss: str, logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-sample ``H_i^+ g_i`` for the loss rule ``loss``, shape ``(n, c)``."""
  check_loss(loss)
  y = as_targets(y, logits)
  if loss == "mse":
    return logits - y
  if loss == "ce_identity":
    return jax.nn.softmax(logits, axis=-1) - y
  # y / p = y exp(log-sum-exp(z) - z), taken as 0 where y == 0 (no 0 * inf).
  log_p = jax.nn.log_softmax(logits, axis=-1)
  y_over_p = jnp.where(y != 0, y * jnp.exp(-jnp.where(y != 0, log_p, 0)), 0)
  return jnp.mean(y_over_p, axis=-1, keepdims=True) - y_over_p


def newton_target(loss: str, logits: jax.Array, y: jax.Array) -> jax.Array:
  """``t = -H^+ g``: the change of the logits that one output-space Newton step makes."""
  return -pinv_hessian_gradient(loss, logits, y)


def loss_value(loss: str, logits: jax.Array, y: jax.Array) -> jax.Array:
  """Batch-mean loss whose GN step the rule ``loss`` takes (``1/2 ||z - y||^2`` for mse)."""
  check_loss(loss)
  y = as_targets(y, logits)
  if loss == "mse":
    return 0.5 * jnp.mean(jnp.sum((logits - y) ** 2, axis=-1))
  return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1))
