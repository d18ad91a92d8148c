"""Datasets without network access: file parsers, offline sets, deterministic batching."""

from gnrev.data.batching import batch_indices, one_hot, steps_per_epoch
from gnrev.data.checks import check_dataset, check_labels
from gnrev.data.datasets import (DATA_DIR_ENV, DATASETS, OFFLINE_DATASETS, Dataset,
                                 load_dataset, resolve_data_dir)
from gnrev.data.files import read_cifar10_binary, read_cifar10_python, read_idx
from gnrev.data.languages import LANGUAGE_TREE, LANGUAGES, load_words, normalise_word
from gnrev.data.mnist1d import make_mnist1d

__all__ = [
    "DATASETS", "DATA_DIR_ENV", "Dataset", "OFFLINE_DATASETS", "batch_indices", "check_dataset",
    "check_labels", "load_dataset", "make_mnist1d", "one_hot", "read_cifar10_binary",
    "read_cifar10_python", "read_idx", "resolve_data_dir", "steps_per_epoch",
    "LANGUAGES", "LANGUAGE_TREE", "load_words", "normalise_word",
]
