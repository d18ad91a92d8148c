"""Binary classification metrics of return prediction: precision, recall, F1, cross-entropy.

Pure ``jax.numpy`` functions (numpy arrays are accepted); jittable. A prediction is positive
("returned") when its logit is > 0, i.e. its probability > 1/2. Precision, recall and F1 are
0 where their denominator is (no predicted or no actual positives), as in scikit-learn's
``zero_division=0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _counts(logits, labels):
  """True positives, predicted positives and actual positives."""
  predicted = jnp.asarray(logits) > 0
  actual = jnp.asarray(labels) == 1
  return (jnp.sum(predicted & actual), jnp.sum(predicted), jnp.sum(actual))


def _ratio(numerator, denominator):
  return jnp.where(denominator > 0, numerator / jnp.maximum(denominator, 1), 0.0)


def precision(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of predicted returns that were returned: ``TP / (TP + FP)``."""
  true_positives, predicted, _ = _counts(logits, labels)
  return _ratio(true_positives, predicted)


def recall(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of returns that were predicted: ``TP / (TP + FN)``."""
  true_positives, _, actual = _counts(logits, labels)
  return _ratio(true_positives, actual)


def f1_score(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Harmonic mean of precision and recall: ``2 TP / (2 TP + FP + FN)``."""
  true_positives, predicted, actual = _counts(logits, labels)
  return _ratio(2 * true_positives, predicted + actual)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean ``-[y log p + (1 - y) log(1 - p)]`` with ``p = sigmoid(logit)``, in nats.

  Computed from logits as ``softplus(logit) - y logit``, finite for any logit.
  """
  logits = jnp.asarray(logits)
  return jnp.mean(jax.nn.softplus(logits) - jnp.asarray(labels, logits.dtype) * logits)


def binary_classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """``{'precision', 'recall', 'f1', 'cross_entropy'}`` of ``logits`` against 0/1 ``labels``.

  Args:
    logits: ``(n,)`` return logits.
    labels: ``(n,)`` labels in {0, 1}.

  Returns:
    A dict of scalars, the four numbers reported by McGowan et al. (arXiv 2302.14096, Table 2).

  Example:
    >>> metrics = binary_classification_metrics(jnp.array([3.0, -2.0, 1.0]), jnp.array([1, 0, 0]))
    >>> float(metrics["precision"]), float(metrics["recall"])
    (0.5, 1.0)
  """
  if jnp.shape(logits) != jnp.shape(labels) or jnp.ndim(logits) != 1:
    raise ValueError(f"logits and labels must both have shape (n,), got {jnp.shape(logits)} "
                     f"and {jnp.shape(labels)}.")
  return {"precision": precision(logits, labels), "recall": recall(logits, labels),
          "f1": f1_score(logits, labels), "cross_entropy": binary_cross_entropy(logits, labels)}
