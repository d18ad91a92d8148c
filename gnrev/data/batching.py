"""Deterministic batching: which examples step ``t`` sees depends only on ``(seed, t)``.

A run resumed from a checkpoint at step ``t`` therefore sees exactly the batches an
uninterrupted run would; the data-iterator position is the step count itself.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder of each shuffled epoch is dropped)."""
  if not 1 <= batch_size <= num_examples:
    raise ValueError(
        f"batch_size must be between 1 and the number of training examples ({num_examples}); "
        f"got {batch_size}.")
  return num_examples // batch_size


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices of the examples in the batch of global step ``step``.

  Each epoch is a fresh permutation drawn from ``numpy.random.default_rng((seed, epoch))``;
  when ``batch_size == num_examples`` (the paper's full batch) every step sees all examples.
  """
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, position = divmod(step, per_epoch)
  if batch_size == num_examples:
    return np.arange(num_examples)
  order = np.random.default_rng((seed, epoch)).permutation(num_examples)
  return order[position * batch_size:(position + 1) * batch_size]


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Float32 one-hot targets ``(n, num_classes)``, as the paper's losses take them."""
  return np.eye(num_classes, dtype=np.float32)[labels]
