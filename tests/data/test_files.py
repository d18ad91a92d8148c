"""IDX and CIFAR-10 parsers on tiny fake files, including malformed ones."""

import gzip
import re
import pickle
import struct

import numpy as np
import pytest

from gnrev import data


def write_idx(path, array, magic=None):
  magic = magic or (2051 if array.ndim == 3 else 2049)
  payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
  payload += array.astype(np.uint8).tobytes()
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_recovers_images_and_labels(tmp_path, suffix):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  labels = np.array([7, 1], np.uint8)
  write_idx(tmp_path / f"img{suffix}", images)
  write_idx(tmp_path / f"lab{suffix}", labels)
  np.testing.assert_array_equal(data.read_idx(str(tmp_path / f"img{suffix}")), images)
  np.testing.assert_array_equal(data.read_idx(str(tmp_path / f"lab{suffix}")), labels)


def test_read_idx_wrong_magic_names_file_and_expected_magic(tmp_path):
  write_idx(tmp_path / "bad", np.zeros((2,), np.uint8), magic=1234)
  with pytest.raises(ValueError, match=r"bad: wrong magic number 1234; expected 2051 .* 2049"):
    data.read_idx(str(tmp_path / "bad"))


def test_read_idx_truncated_payload_names_file_and_sizes(tmp_path):
  write_idx(tmp_path / "short", np.zeros((4, 2, 2), np.uint8))
  raw = (tmp_path / "short").read_bytes()
  (tmp_path / "short").write_bytes(raw[:-3])
  with pytest.raises(ValueError,
                     match=r"short: IDX header announces shape \(4, 2, 2\) \(16 bytes"):
    data.read_idx(str(tmp_path / "short"))


def fake_cifar(n, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def test_cifar_python_batch_is_read_as_nhwc_from_channel_planes(tmp_path):
  pixels, labels = fake_cifar(3)
  with open(tmp_path / "data_batch_1", "wb") as f:
    pickle.dump({b"data": pixels, b"labels": list(labels)}, f)
  images, read_labels = data.read_cifar10_python(str(tmp_path / "data_batch_1"))
  assert images.shape == (3, 32, 32, 3)
  # Pixel (row 1, col 2) of the green plane is at offset 1024 + 32 + 2 of the record.
  np.testing.assert_array_equal(images[:, 1, 2, 1], pixels[:, 1024 + 32 + 2])
  np.testing.assert_array_equal(read_labels, labels)


def test_cifar_binary_and_python_batches_agree(tmp_path):
  pixels, labels = fake_cifar(4, seed=1)
  records = np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1)
  records.tofile(tmp_path / "b.bin")
  with open(tmp_path / "p", "wb") as f:
    pickle.dump({b"data": pixels, b"labels": list(labels)}, f)
  for got, want in zip(data.read_cifar10_binary(str(tmp_path / "b.bin")),
                       data.read_cifar10_python(str(tmp_path / "p"))):
    np.testing.assert_array_equal(got, want)


def test_cifar_truncated_binary_and_bad_pickle_name_the_file(tmp_path):
  np.zeros(3073 + 10, np.uint8).tofile(tmp_path / "cut.bin")
  with pytest.raises(ValueError,
                     match=r"cut.bin: 3083 bytes is not a whole number .*\(3073 bytes each"):
    data.read_cifar10_binary(str(tmp_path / "cut.bin"))
  (tmp_path / "junk").write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match=r"junk: not a readable CIFAR-10 python batch"):
    data.read_cifar10_python(str(tmp_path / "junk"))
  with open(tmp_path / "wrongkeys", "wb") as f:
    pickle.dump({b"images": 1}, f)
  with pytest.raises(ValueError, match=r"wrongkeys: expected a pickled dict with keys b'data'"):
    data.read_cifar10_python(str(tmp_path / "wrongkeys"))


def test_corrupt_gzip_names_the_file(tmp_path):
  write_idx(tmp_path / "img.gz", np.zeros((2, 2, 2), np.uint8))
  raw = (tmp_path / "img.gz").read_bytes()
  (tmp_path / "cut.gz").write_bytes(raw[:len(raw) // 2])
  (tmp_path / "junk.gz").write_bytes(b"definitely not gzip")
  for name in ("cut.gz", "junk.gz"):
    with pytest.raises(ValueError, match=rf"{name}: not a readable gzip file .*truncated or "
                                         r"corrupt"):
      data.read_idx(str(tmp_path / name))


@pytest.mark.parametrize("shape", [(0,), (0, 28, 28), (3, 0, 28)])
def test_idx_with_an_empty_dimension_names_the_file(tmp_path, shape):
  write_idx(tmp_path / "empty", np.zeros(shape, np.uint8))
  with pytest.raises(ValueError, match=rf"empty: IDX header announces shape "
                                       rf"{re.escape(str(shape))}; every size must be >= 1"):
    data.read_idx(str(tmp_path / "empty"))


def test_labels_outside_the_classes_in_a_data_file_name_the_file(tmp_path, monkeypatch):
  pixels, labels = fake_cifar(3)
  labels[1] = 10
  with open(tmp_path / "data_batch_1", "wb") as f:
    pickle.dump({b"data": pixels, b"labels": list(labels)}, f)
  with pytest.raises(ValueError, match=r"data_batch_1: label 10 at index 1 is outside \[0, 10\)"):
    data.read_cifar10_python(str(tmp_path / "data_batch_1"))
  mnist = tmp_path / "mnist"
  mnist.mkdir()
  write_idx(mnist / "train-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
  write_idx(mnist / "train-labels-idx1-ubyte", np.array([3, 12], np.uint8))
  with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: label 12 at index 1 is outside "
                                       r"\[0, 10\)"):
    data.load_dataset("mnist", "train", str(tmp_path))
