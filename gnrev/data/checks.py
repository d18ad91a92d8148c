"""Checks of loaded data: labels inside ``[0, num_classes)``, finite inputs and graph features,
matching sizes.

A bad label or a NaN pixel would otherwise surface as a bare ``IndexError`` in the one-hot
encoding, or as a NaN loss, minutes into a run. The launcher calls :func:`check_dataset` on both
splits before any run trains; loaders call :func:`check_labels` on the labels they read from a
file, so that the error names the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
  """Raises ``ValueError`` naming ``source`` unless ``labels`` are integers in ``[0, num_classes)``.

  Args:
    labels: ``(n,)`` class labels.
    num_classes: the number of classes; labels must lie in ``[0, num_classes)``.
    source: what the labels came from (a file, or ``"dataset 'x' (train split)"``).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{source}: labels must be a 1-D array (n,), got shape {labels.shape}.")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{source}: labels must be integers, got dtype {labels.dtype}.")
  outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if outside.size:
    first = int(outside[0])
    raise ValueError(
        f"{source}: label {int(labels[first])} at index {first} is outside [0, {num_classes}) "
        f"({outside.size} of {labels.size} labels are); allowed: 0..{num_classes - 1}.")


def check_dataset(dataset: Any, source: str) -> None:
  """Raises ``ValueError`` naming ``source`` on an empty split, bad labels or non-finite inputs
  (``x`` and every float array of ``variables``, e.g. a graph's node features).

  Args:
    dataset: a :class:`gnrev.data.Dataset` (``x``, ``y``, ``num_classes``).
    source: how to name it in the message, e.g. ``"dataset 'digits' (train split)"``.

  Example:
    >>> import numpy as np
    >>> from gnrev.data import Dataset
    >>> check_dataset(Dataset(np.zeros((2, 3), np.float32), np.array([0, 2]), 2), "toy")
    Traceback (most recent call last):
    ...
    ValueError: toy: label 2 at index 1 is outside [0, 2) (1 of 2 labels are); allowed: 0..1.
  """
  x, y = np.asarray(dataset.x), np.asarray(dataset.y)
  if not isinstance(dataset.num_classes, (int, np.integer)) or dataset.num_classes < 1:
    raise ValueError(f"{source}: num_classes must be a positive int, got "
                     f"{dataset.num_classes!r}.")
  if len(y) == 0:
    raise ValueError(f"{source}: holds no examples.")
  if len(x) != len(y):
    raise ValueError(f"{source}: {len(x)} inputs but {len(y)} labels; they must match.")
  check_labels(y, int(dataset.num_classes), source)
  if np.issubdtype(x.dtype, np.inexact):
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
      raise ValueError(
          f"{source}: input {int(np.flatnonzero(bad)[0])} holds non-finite values (NaN or inf; "
          f"{int(bad.sum())} of {len(x)} inputs do); inputs must be finite.")
  _check_finite_variables(dataset.variables or {}, source, "variables")


def _check_finite_variables(tree: Any, source: str, path: str) -> None:
  """Raises ``ValueError`` naming the array's path (e.g. a graph's node features) at the first
  non-finite float of the dataset's non-trained ``variables``."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      _check_finite_variables(value, source, f"{path}.{key}")
    return
  array = np.asarray(tree)
  if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
    row = int(np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))[0])
    raise ValueError(f"{source}: {path} row {row} holds non-finite values (NaN or inf); "
                     f"every feature must be finite.")
