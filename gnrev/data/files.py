"""Parsers for dataset files: MNIST / Fashion-MNIST IDX, CIFAR-10 batches, integer CSV tables.

Nothing is ever downloaded. A malformed file (wrong magic number, truncated payload) raises a
``ValueError`` that names the file and what was expected.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib

import numpy as np

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
CIFAR10_PIXELS = 3 * 32 * 32


def _read_bytes(path: str) -> bytes:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    return f.read()


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file of unsigned bytes: labels (magic 2049) or images (magic 2051).

  Args:
    path: the file, optionally gzip-compressed (name ending in ``.gz``).

  Returns:
    The uint8 payload with the shape given by the header: ``(n,)`` or ``(n, rows, cols)``.
  """
  raw = _read_bytes(path)
  if len(raw) < 8:
    raise ValueError(f"{path}: truncated IDX file ({len(raw)} bytes, a header needs at least 8).")
  magic = struct.unpack(">i", raw[:4])[0]
  if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
    raise ValueError(
        f"{path}: wrong magic number {magic}; expected {IDX_IMAGES_MAGIC} (images) or "
        f"{IDX_LABELS_MAGIC} (labels), as big-endian int32.")
  ndim = 3 if magic == IDX_IMAGES_MAGIC else 1
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated IDX header; expected {header} bytes, got {len(raw)}.")
  shape = struct.unpack(f">{ndim}i", raw[4:header])
  expected = int(np.prod(shape))
  if len(raw) - header != expected:
    raise ValueError(
        f"{path}: IDX header announces shape {shape} ({expected} bytes of data) but the file "
        f"holds {len(raw) - header}; the file is truncated or corrupt.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_cifar10_python(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 python batch (a pickle with ``b"data"`` ``(n, 3072)`` and ``b"labels"``).

  Returns:
    ``(images, labels)``: uint8 ``(n, 32, 32, 3)`` (NHWC) and int ``(n,)``.
  """
  try:
    with open(path, "rb") as f:
      batch = pickle.load(f, encoding="bytes")
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise ValueError(f"{path}: not a readable CIFAR-10 python batch (pickle): {e}.") from e
  if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
    raise ValueError(f"{path}: expected a pickled dict with keys b'data' and b'labels'.")
  data = np.asarray(batch[b"data"], np.uint8)
  labels = np.asarray(batch[b"labels"], np.int64)
  if data.ndim != 2 or data.shape[1] != CIFAR10_PIXELS or len(labels) != len(data):
    raise ValueError(
        f"{path}: expected b'data' of shape (n, {CIFAR10_PIXELS}) and n labels; got "
        f"{data.shape} and {labels.shape}.")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10_binary(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 binary batch: records of 1 label byte followed by 3072 pixel bytes.

  Returns:
    ``(images, labels)``: uint8 ``(n, 32, 32, 3)`` (NHWC) and int ``(n,)``.
  """
  raw = np.fromfile(path, np.uint8)
  record = 1 + CIFAR10_PIXELS
  if raw.size == 0 or raw.size % record:
    raise ValueError(
        f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 binary records "
        f"({record} bytes each: 1 label byte + {CIFAR10_PIXELS} pixel bytes); truncated?")
  records = raw.reshape(-1, record)
  labels = records[:, 0].astype(np.int64)
  if labels.max() > 9:
    raise ValueError(f"{path}: label byte {labels.max()} out of range 0..9; not CIFAR-10 binary.")
  return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def find_file(directory: str, candidates: list[str]) -> str | None:
  """The first existing ``directory/candidate`` (also trying a ``.gz`` suffix), else ``None``."""
  for name in candidates:
    for suffix in ("", ".gz"):
      path = os.path.join(directory, name + suffix)
      if os.path.isfile(path):
        return path
  return None


def read_csv_rows(path: str, num_columns: int) -> np.ndarray:
  """Reads a headerless CSV of integers (optionally ``.gz``) into an ``(n, num_columns)`` array.

  Raises:
    ValueError: naming the file, for an unreadable or corrupt file, a row with another number
      of columns, a non-integer field or an empty file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt") as f:
      lines = [line for line in f.read().splitlines() if line.strip()]
  except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
    raise ValueError(f"{path}: cannot read the file ({type(e).__name__}: {e}); it is corrupt "
                     f"or not a{' gzip-compressed' if path.endswith('.gz') else ''} CSV.") from e
  if not lines:
    raise ValueError(f"{path}: the file holds no rows; expected {num_columns} integer columns "
                     f"per row.")
  for number, line in enumerate(lines, 1):
    if line.count(",") != num_columns - 1:
      raise ValueError(f"{path}: row {number} has {line.count(',') + 1} columns; expected "
                       f"{num_columns}.")
  try:
    return np.loadtxt(lines, delimiter=",", dtype=np.int64, ndmin=2)
  except ValueError as e:
    raise ValueError(f"{path}: every field must be an integer ({e}).") from e
