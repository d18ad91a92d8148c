"""Datasets by name: offline ones that always work and file-backed ones read from a data dir.

Every loader returns a :class:`Dataset` of normalised float32 inputs (images NHWC, sequences
``(n, length, 1)``, vectors ``(n, d)``) and int32 labels. Normalisation follows the paper's
protocol (Buffelli et al. 2024, section 5): MNIST ``(x/255 - 0.1307) / 0.3081``, CIFAR-10
per-channel mean/std; offline sets are standardised with statistics of their training split.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from gnrev.data import files, graph_returns as graph_returns_data, mnist1d

OFFLINE_DATASETS = ("digits", "mnist1d", "teacher_student")
DATA_DIR_ENV = "GNREV_DATA_DIR"
SPLITS = ("train", "test")


class Dataset(NamedTuple):
  """One split of a classification dataset."""
  x: np.ndarray            # (n, ...) float32, normalised
  y: np.ndarray            # (n,) int32 class labels
  num_classes: int
  # Non-trained flax variable collections every example reads (e.g. the message graph of
  # ``graph_returns``); the launcher replicates them and passes them to its steps.
  variables: Optional[dict[str, Any]] = None


def _standardise(train_x: np.ndarray, x: np.ndarray) -> np.ndarray:
  return ((x - train_x.mean()) / train_x.std()).astype(np.float32)


def _split(x: np.ndarray, y: np.ndarray, split: str, num_test: int, num_classes: int) -> Dataset:
  """Fixed train/test split of an offline set (the last ``num_test`` examples are the test set)."""
  train_x = x[:-num_test]
  part = slice(None, -num_test) if split == "train" else slice(-num_test, None)
  return Dataset(_standardise(train_x, x[part]), y[part].astype(np.int32), num_classes)


DIGITS_SCALES = ("standard", "unit")


def digits(split: str, data_dir: str | None = None, seed: int = 0,
           scale: str = "standard") -> Dataset:
  """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): 1,437 train, 360 test.

  ``scale="standard"`` standardises with the training split's statistics; ``"unit"`` keeps the
  pixel intensities in [0, 1] (for Bernoulli reconstruction).
  """
  del data_dir
  if scale not in DIGITS_SCALES:
    raise ValueError(f"digits: unknown scale {scale!r}; allowed: {', '.join(DIGITS_SCALES)}.")
  from sklearn.datasets import load_digits
  bunch = load_digits()
  order = np.random.default_rng(seed).permutation(len(bunch.target))
  x = bunch.images[order].astype(np.float32)[..., None] / 16.0
  if scale == "unit":
    part = slice(None, -360) if split == "train" else slice(-360, None)
    return Dataset(x[part], bunch.target[order][part].astype(np.int32), 10)
  return _split(x, bunch.target[order], split, num_test=360, num_classes=10)


def mnist1d_dataset(split: str, data_dir: str | None = None, seed: int = 42) -> Dataset:
  """MNIST-1D generated locally (:mod:`gnrev.data.mnist1d`): 4,000 train, 1,000 test sequences."""
  del data_dir
  x, y = mnist1d.make_mnist1d(num_examples=5000, seed=seed)
  return _split(x[..., None], y, split, num_test=1000, num_classes=10)


def teacher_student(split: str, data_dir: str | None = None, seed: int = 0,
                    num_train: int = 1024, num_test: int = 256, dim: int = 32,
                    num_classes: int = 10, teacher_width: int = 64) -> Dataset:
  """Gaussian inputs labelled by a random one-hidden-layer tanh teacher (argmax of its logits)."""
  del data_dir
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_train + num_test, dim)).astype(np.float32)
  w1 = rng.standard_normal((dim, teacher_width)) / np.sqrt(dim)
  w2 = rng.standard_normal((teacher_width, num_classes)) / np.sqrt(teacher_width)
  y = np.argmax(np.tanh(x @ w1) @ w2, axis=-1)
  return _split(x, y, split, num_test=num_test, num_classes=num_classes)


def graph_returns(split: str, data_dir: str | None = None, source: str = "synthetic",
                  seed: int = 0,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), num_customers: int = 1000,
                  num_variants: int = 300, events_per_customer: float = 8.0,
                  feature_noise: float = 1.0) -> Dataset:
  """Return prediction on a customer-variant purchase graph: one example per purchase event.

  ``source="synthetic"`` (default, offline): the graph of
  :func:`~gnrev.data.graph_returns.synthetic_graph_returns` (``seed`` and the size options).
  ``source="files"``: the GraphReturns CSV files
  (:func:`gnrev.data.graph_returns.load_graph_returns`) in ``data_dir/graph_returns`` or
  ``data_dir``; missing files are an error, never a silent fallback to synthetic data.
  Events are split by ``fractions`` (train, validation, test; ``seed``); the launcher trains on
  the first and tests on the last (held-out) part. Node and event features are standardised
  with training-event statistics.

  Returns:
    ``x``: float32 rows ``[customer index, variant index, event features...]``
    (:func:`gnrev.data.graph_returns.event_inputs`); ``y``: 1 if returned, else 0;
    ``num_classes`` 2; ``variables``: the message graph over all events, labels dropped
    (:func:`gnrev.data.graph_returns.graph_variables`), identical for both splits.
  """
  if source == "files":
    root = resolve_data_dir(data_dir)
    found = [d for d in (os.path.join(root, "graph_returns"), root)
             if os.path.isfile(os.path.join(d, "events.csv"))]
    if not found:
      raise _missing("graph_returns", os.path.join(root, "graph_returns"),
                     ["customers.csv", "variants.csv", "events.csv"])
    data = graph_returns_data.load_graph_returns(found[0])
  elif source == "synthetic":
    data = graph_returns_data.synthetic_graph_returns(
        seed, num_customers=num_customers, num_variants=num_variants,
        events_per_customer=events_per_customer, feature_noise=feature_noise)
  else:
    raise ValueError(f"graph_returns: unknown source {source!r}; allowed: 'synthetic', 'files'.")
  parts = graph_returns_data.split_events(data.num_events, fractions, seed=seed)
  data = graph_returns_data.standardize_features(data, parts.train)
  events = parts.train if split == "train" else parts.test
  return Dataset(graph_returns_data.event_inputs(data, events),
                 data.returned[events].astype(np.int32), 2, graph_returns_data.graph_variables(data))


def _missing(name: str, directory: str, expected: list[str]) -> FileNotFoundError:
  return FileNotFoundError(
      f"Dataset {name!r} not found: expected {', '.join(expected)} in "
      f"{directory!r}. gnrev never downloads; put the files there, point "
      f"--config.data.data_dir or ${DATA_DIR_ENV} at them, or use an offline dataset: "
      f"{', '.join(OFFLINE_DATASETS)}.")


def _idx_loader(name: str, subdir: str, mean: float, std: float) -> Callable[..., Dataset]:
  def load(split: str, data_dir: str | None = None) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    root = resolve_data_dir(data_dir)
    for directory in (os.path.join(root, subdir), root):
      images, labels = (files.find_file(directory, [n]) for n in names)
      if images and labels:
        x, y = files.read_idx(images), files.read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
          raise ValueError(
              f"{images} and {labels}: expected (n, rows, cols) images and (n,) labels with the "
              f"same n; got {x.shape} and {y.shape}.")
        x = (x.astype(np.float32)[..., None] / 255.0 - mean) / std
        return Dataset(x.astype(np.float32), y.astype(np.int32), 10)
    raise _missing(name, os.path.join(root, subdir), [n + "[.gz]" for n in names])
  load.__doc__ = f"{name} from IDX files in ``data_dir/{subdir}`` or ``data_dir``."
  return load


CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)


def cifar10(split: str, data_dir: str | None = None) -> Dataset:
  """CIFAR-10 from ``cifar-10-batches-py`` (pickles) or ``cifar-10-batches-bin`` in ``data_dir``."""
  root = resolve_data_dir(data_dir)
  stems = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
  layouts = (("cifar-10-batches-py", "", files.read_cifar10_python),
             ("cifar-10-batches-bin", ".bin", files.read_cifar10_binary))
  for subdir, suffix, reader in layouts:
    paths = [os.path.join(root, subdir, stem + suffix) for stem in stems]
    if all(os.path.isfile(p) for p in paths):
      parts = [reader(p) for p in paths]
      x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
      y = np.concatenate([p[1] for p in parts]).astype(np.int32)
      return Dataset(((x - CIFAR10_MEAN) / CIFAR10_STD).astype(np.float32), y, 10)
  raise _missing("cifar10", root, [f"{subdir}/{stems[0]}{suffix}..." for subdir, suffix, _ in
                                   layouts])


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist1d": mnist1d_dataset,
    "teacher_student": teacher_student,
    "mnist": _idx_loader("mnist", "mnist", 0.1307, 0.3081),
    "fashion_mnist": _idx_loader("fashion_mnist", "fashion_mnist", 0.2860, 0.3530),
    "cifar10": cifar10,
    "graph_returns": graph_returns,
}


def resolve_data_dir(data_dir: str | None) -> str:
  """``data_dir`` if given, else ``$GNREV_DATA_DIR``, else ``~/gnrev_data``."""
  return data_dir or os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/gnrev_data")


def load_dataset(name: str, split: str, data_dir: str | None = None, **options) -> Dataset:
  """Loads one split of a dataset by name.

  Args:
    name: one of :data:`DATASETS` (``digits``, ``mnist1d``, ``teacher_student`` and synthetic
      ``graph_returns`` need no files).
    split: ``"train"`` or ``"test"``.
    data_dir: where file-backed datasets live; defaults to ``$GNREV_DATA_DIR``.
    **options: dataset-specific options (e.g. ``seed`` or ``dim`` for ``teacher_student``;
      the launcher passes ``config.data.options``).

  Returns:
    A :class:`Dataset`.

  Example::

    train = load_dataset("digits", "train")      # train.x: (1437, 8, 8, 1), train.y: (1437,)
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}.")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; allowed: {', '.join(SPLITS)}.")
  return DATASETS[name](split, data_dir, **options)
