"""GraphReturns: CSV loader on tiny fake files, synthetic generator, event split."""

import numpy as np
import pytest

from gnrev.data import graph_returns as gr

CUSTOMERS = "customer_id,age,size\nalice,31,2.5\nbob,45,1.0\ncarol,22,3.0\n"
VARIANTS = "variant_id,price,colour\nv9,19.99,1\nv3,5.0,0\n"
EVENTS = ("customer_id,variant_id,returned,discount\n"
          "carol,v3,1,0.1\nalice,v9,0,0.0\nbob,v9,true,0.5\ncarol,v9,0,0.2\n")


def _write(directory, customers=CUSTOMERS, variants=VARIANTS, events=EVENTS):
  for name, text in (("customers.csv", customers), ("variants.csv", variants),
                     ("events.csv", events)):
    if text is not None:
      (directory / name).write_text(text)
  return str(directory)


def test_loader_remaps_ids_to_contiguous_rows_in_file_order(tmp_path):
  data = gr.load_graph_returns(_write(tmp_path))
  np.testing.assert_array_equal(data.customer_ids, ["alice", "bob", "carol"])
  np.testing.assert_array_equal(data.variant_ids, ["v9", "v3"])
  np.testing.assert_array_equal(data.customer_features, [[31, 2.5], [45, 1.0], [22, 3.0]])
  np.testing.assert_allclose(data.variant_features, [[19.99, 1], [5.0, 0]], rtol=1e-6)
  np.testing.assert_array_equal(data.customer, [2, 0, 1, 2])
  np.testing.assert_array_equal(data.variant, [1, 0, 0, 0])
  np.testing.assert_array_equal(data.returned, [1, 0, 1, 0])
  np.testing.assert_allclose(data.event_features, [[0.1], [0.0], [0.5], [0.2]])
  assert data.customer.dtype == np.int32 and data.customer_features.dtype == np.float32
  assert (data.num_customers, data.num_variants, data.num_events) == (3, 2, 4)


def test_loader_honours_overridden_file_and_column_names(tmp_path):
  (tmp_path / "cust.csv").write_text(CUSTOMERS.replace("customer_id", "cid"))
  (tmp_path / "var.csv").write_text(VARIANTS)
  (tmp_path / "ev.csv").write_text(EVENTS.replace("customer_id", "cid")
                                   .replace("returned", "is_return"))
  data = gr.load_graph_returns(str(tmp_path), customers_file="cust.csv", variants_file="var.csv",
                               events_file="ev.csv", customer_id="cid", label="is_return",
                               customer_features=["size"])
  np.testing.assert_array_equal(data.customer_features, [[2.5], [1.0], [3.0]])
  np.testing.assert_array_equal(data.returned, [1, 0, 1, 0])


@pytest.mark.parametrize("files,error,message", [
    ({"variants": None}, FileNotFoundError, r"variants\.csv.*variant_id"),
    ({"events": EVENTS.replace("returned", "label")}, ValueError,
     r"events\.csv.*lacks column.*'returned'"),
    ({"events": EVENTS.replace("bob,v9,true", "bob,v9,maybe")}, ValueError,
     r"line 4 column 'returned': 'maybe'.*allowed: 0, 1"),
    ({"customers": CUSTOMERS.replace("45", "forty-five")}, ValueError,
     r"customers\.csv.*line 3 column 'age'.*not a finite number"),
    ({"customers": CUSTOMERS.replace("45", "nan")}, ValueError,
     r"customers\.csv.*line 3 column 'age': 'nan' is not a finite number"),
    ({"variants": VARIANTS.replace("5.0,0", "inf,0")}, ValueError,
     r"variants\.csv.*line 3 column 'price': 'inf' is not a finite number"),
    ({"events": EVENTS.replace("alice,v9", "dave,v9")}, ValueError,
     r"customer_id 'dave' is not in the node file"),
    ({"variants": VARIANTS + "v9,1.0,1\n"}, ValueError, r"repeats 'variant_id'.*v9"),
], ids=["missing_file", "missing_column", "non_numeric_label", "non_numeric_feature",
        "nan_feature", "infinite_feature", "event_of_unknown_node", "repeated_node_ids"])
def test_loader_rejects_bad_files_naming_the_file_line_and_column(tmp_path, files, error,
                                                                   message):
  with pytest.raises(error, match=message):
    gr.load_graph_returns(_write(tmp_path, **files))


def test_loader_rejects_a_ragged_row(tmp_path):
  with pytest.raises(ValueError, match=r"line 3 has 2 fields"):
    gr.load_graph_returns(_write(tmp_path, variants=VARIANTS.replace("v3,5.0,0", "v3,5.0")))


def test_saved_synthetic_graph_loads_back_exactly(tmp_path):
  data = gr.synthetic_graph_returns(1, num_customers=30, num_variants=10)
  gr.save_graph_returns(data, str(tmp_path / "graph"))
  loaded = gr.load_graph_returns(str(tmp_path / "graph"))
  for name, original, back in zip(gr.GraphReturns._fields, data, loaded):
    np.testing.assert_array_equal(back, original, err_msg=name)
    assert back.dtype.kind == original.dtype.kind, name


def test_synthetic_graph_is_a_deterministic_function_of_the_seed():
  a, b = (gr.synthetic_graph_returns(3, num_customers=60, num_variants=20) for _ in range(2))
  c = gr.synthetic_graph_returns(4, num_customers=60, num_variants=20)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.returned, c.returned) or not np.array_equal(a.variant, c.variant)


@pytest.mark.parametrize("num_customers,num_variants,events_per_customer",
                         [(50, 200, 1.0), (200, 30, 6.0), (1, 1, 1.0)])
def test_synthetic_graph_has_the_released_data_schema(num_customers, num_variants,
                                                       events_per_customer):
  data = gr.synthetic_graph_returns(0, num_customers=num_customers, num_variants=num_variants,
                                    events_per_customer=events_per_customer)
  assert data.customer_features.shape == (num_customers, 4)
  assert data.variant_features.shape == (num_variants, 4)
  assert data.event_features.shape == (data.num_events, 3)
  assert data.num_events >= max(num_customers, num_variants)
  assert data.customer.dtype == data.variant.dtype == data.returned.dtype == np.int32
  assert set(np.unique(data.returned)) <= {0, 1}
  # Every customer returned at least one item; every variant was bought at least once.
  assert np.all(np.bincount(data.customer[data.returned == 1], minlength=num_customers) >= 1)
  assert np.all(np.bincount(data.variant, minlength=num_variants) >= 1)
  assert data.customer.max() < num_customers and data.variant.max() < num_variants


def test_synthetic_size_mismatch_drives_returns():
  # The generator's premise: a customer's returns concentrate on variants far from the sizes
  # they usually buy, a signal only the customer's other purchases reveal.
  data = gr.synthetic_graph_returns(0, num_customers=2000, num_variants=400)
  variant_size = data.variant_features[data.variant, 0]
  usual = (np.bincount(data.customer, variant_size, data.num_customers) /
           np.bincount(data.customer, minlength=data.num_customers))
  mismatch = np.abs(variant_size - usual[data.customer])
  far = mismatch > np.median(mismatch)
  assert data.returned[far].mean() > data.returned[~far].mean() + 0.1


@pytest.mark.parametrize("kwargs,match", [
    ({"num_customers": 0}, "num_customers"), ({"num_variants": 2.5}, "num_variants"),
    ({"events_per_customer": 0.5}, "events_per_customer"), ({"feature_noise": -1}, "noise")])
def test_synthetic_rejects_bad_sizes(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gr.synthetic_graph_returns(0, **kwargs)


def test_split_partitions_the_events():
  split = gr.split_events(101, (0.7, 0.2, 0.1), seed=1)
  assert (len(split.train), len(split.val), len(split.test)) == (71, 20, 10)
  np.testing.assert_array_equal(np.sort(np.concatenate(split)), np.arange(101))
  with pytest.raises(ValueError, match="summing to 1"):
    gr.split_events(10, (0.5, 0.2, 0.2))


def test_standardize_uses_training_events_only_for_event_statistics():
  data = gr.synthetic_graph_returns(0, num_customers=40, num_variants=10)
  train = np.arange(data.num_events // 2)
  z = gr.standardize_features(data, train)
  np.testing.assert_allclose(z.event_features[train].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.event_features[train].std(0), 1, atol=1e-5)
  np.testing.assert_allclose(z.customer_features.std(0), 1, atol=1e-5)
  np.testing.assert_array_equal(z.returned, data.returned)
