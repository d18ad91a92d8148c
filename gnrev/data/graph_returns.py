"""ASOS GraphReturns: the released files' loader and a schema-faithful synthetic generator.

GraphReturns (McGowan et al., arXiv 2302.14096) records purchases of an online fashion
retailer as a bipartite graph: customers on one side, product variants (a product in one size
and colour) on the other, and one edge per purchase event labelled returned or not. Every
customer returned at least one item and every variant was bought at least once. Return
prediction is binary classification of the edges.

Both :func:`load_graph_returns` and :func:`synthetic_graph_returns` give a
:class:`GraphReturns` of numpy arrays with contiguous node indices; :func:`save_graph_returns`
writes one in the loader's CSV layout, :func:`split_events` draws the train / validation / test
split of the events and :func:`standardize_features` scales the features. The loader's file and
column names are a documented choice, each overridable, not the release's own names.

For the launcher, :func:`event_inputs` encodes events as array rows and :func:`graph_variables`
the message graph (node features and unlabelled message edges) as the non-trained flax variable
collection :data:`GRAPH`, whose fields are :data:`MESSAGE_GRAPH_FIELDS` (those of
the message graph of the graph wing, which reads them).
"""

from __future__ import annotations

import collections
import csv
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np


class GraphReturns(NamedTuple):
  """A customer-variant purchase graph with return labels; every array is numpy.

  Node indices are contiguous: row ``i`` of ``customer_features`` is customer ``i`` and
  ``customer_ids[i]`` is its identifier in the source (likewise for variants).
  """
  customer_features: np.ndarray  # (num_customers, customer_dim) float32
  variant_features: np.ndarray  # (num_variants, variant_dim) float32
  customer: np.ndarray  # (num_events,) int32, the customer of each purchase event
  variant: np.ndarray  # (num_events,) int32, the variant of each purchase event
  event_features: np.ndarray  # (num_events, event_dim) float32
  returned: np.ndarray  # (num_events,) int32 in {0, 1}, the label
  customer_ids: np.ndarray  # (num_customers,) source identifier of each customer row
  variant_ids: np.ndarray  # (num_variants,) source identifier of each variant row

  @property
  def num_customers(self) -> int:
    return self.customer_features.shape[0]

  @property
  def num_variants(self) -> int:
    return self.variant_features.shape[0]

  @property
  def num_events(self) -> int:
    return self.customer.shape[0]


class EventSplit(NamedTuple):
  """Disjoint event index sets; together they cover every event."""
  train: np.ndarray  # (num_train,) int32, sorted
  val: np.ndarray  # (num_val,) int32, sorted
  test: np.ndarray  # (num_test,) int32, sorted


def _read_csv(path: str, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
  """Header and rows of a CSV file; errors name the file and the missing columns."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GraphReturns file {path!r} not found; expected a CSV file with "
                            f"columns {list(required)} plus numeric feature columns.")
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = [name.strip() for name in next(reader, [])]
    rows = [row for row in reader if row]
  missing = [name for name in required if name not in header]
  if missing:
    raise ValueError(f"GraphReturns file {path!r} lacks column(s) {missing}; it has {header}.")
  for number, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise ValueError(f"{path!r} line {number} has {len(row)} fields, the header has "
                       f"{len(header)}.")
  return header, rows


def _numeric_columns(path: str, header: list[str], rows: list[list[str]],
                     names: Sequence[str]) -> np.ndarray:
  """The named columns as a float32 ``(len(rows), len(names))`` array."""
  out = np.empty((len(rows), len(names)), np.float32)
  for j, name in enumerate(names):
    column = np.asarray([row[header.index(name)] for row in rows], dtype=str)
    try:
      out[:, j] = column.astype(np.float32)
    except ValueError:
      out[:, j] = [_number_or_nan(value) for value in column]
    bad = np.flatnonzero(~np.isfinite(out[:, j]))
    if bad.size:
      cell = str(column[bad[0]])
      raise ValueError(f"{path!r} line {bad[0] + 2} column {name!r}: {cell!r} is not a finite "
                       f"number ({bad.size} of {len(rows)} cells are not); feature "
                       f"columns must be numeric and finite (pick them with the *_features "
                       f"arguments).")
  return out


def _number_or_nan(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    return float("nan")


def _node_table(path: str, id_column: str, features: Optional[Sequence[str]]):
  """Identifiers, feature array and id -> row index map of a node file."""
  header, rows = _read_csv(path, [id_column, *(features or ())])
  names = list(features) if features is not None else [h for h in header if h != id_column]
  ids = [row[header.index(id_column)].strip() for row in rows]
  index = {node_id: i for i, node_id in enumerate(ids)}
  if len(index) != len(ids):
    duplicated = sorted(node_id for node_id, n in collections.Counter(ids).items() if n > 1)[:5]
    raise ValueError(f"{path!r} repeats {id_column!r} value(s) {duplicated}; ids must be unique.")
  return np.asarray(ids), _numeric_columns(path, header, rows, names), index


def _event_endpoints(path: str, header: list[str], rows: list[list[str]], column: str,
                     index: dict[str, int]) -> np.ndarray:
  col = header.index(column)
  out = np.empty(len(rows), np.int32)
  for i, row in enumerate(rows):
    node_id = row[col].strip()
    if node_id not in index:
      raise ValueError(f"{path!r} line {i + 2}: {column} {node_id!r} is not in the node file.")
    out[i] = index[node_id]
  return out


def load_graph_returns(data_dir: str, *,
                       customers_file: str = "customers.csv",
                       variants_file: str = "variants.csv",
                       events_file: str = "events.csv",
                       customer_id: str = "customer_id",
                       variant_id: str = "variant_id",
                       label: str = "returned",
                       customer_features: Optional[Sequence[str]] = None,
                       variant_features: Optional[Sequence[str]] = None,
                       event_features: Optional[Sequence[str]] = None) -> GraphReturns:
  """Loads the GraphReturns CSV files from ``data_dir``.

  Expected files (every name overridable by keyword):

  - ``customers.csv``: column ``customer_id`` and numeric customer feature columns;
  - ``variants.csv``: column ``variant_id`` and numeric variant feature columns;
  - ``events.csv``: columns ``customer_id``, ``variant_id``, ``returned`` (0/1, also
    ``true``/``false``) and numeric per-event feature columns.

  Identifiers are strings; they are remapped to contiguous row indices in file order, and the
  events must refer to ids present in the node files. Feature columns default to every column
  other than the id / label columns, in file order; pass ``*_features`` to pick some.

  Args:
    data_dir: directory holding the three files.
    customers_file, variants_file, events_file: file names inside ``data_dir``.
    customer_id, variant_id, label: column names of the ids and the return label.
    customer_features, variant_features, event_features: feature columns to keep, or ``None``
      for all remaining columns.

  Returns:
    A :class:`GraphReturns` of numpy arrays (features float32, indices int32).

  Raises:
    FileNotFoundError: a file is missing (the message names it and its expected columns).
    ValueError: a missing column, a non-numeric feature, a label other than 0/1, a repeated
      node id or an event whose id is not in the node file (the message names file and line).

  Typical use: ``data = load_graph_returns("/data/graph_returns")``, then
  ``split_events(data.num_events, seed=0)``; :func:`synthetic_graph_returns` has a runnable
  example with data of the same form.
  """
  def path(name):
    return os.path.join(data_dir, name)

  customer_ids, cust_x, customer_index = _node_table(path(customers_file), customer_id,
                                                     customer_features)
  variant_ids, var_x, variant_index = _node_table(path(variants_file), variant_id,
                                                  variant_features)
  events_path = path(events_file)
  header, rows = _read_csv(events_path, [customer_id, variant_id, label, *(event_features or ())])
  names = (list(event_features) if event_features is not None else
           [h for h in header if h not in (customer_id, variant_id, label)])
  label_values = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
  label_col = header.index(label)
  returned = np.empty(len(rows), np.int32)
  for i, row in enumerate(rows):
    value = row[label_col].strip().lower()
    if value not in label_values:
      raise ValueError(f"{events_path!r} line {i + 2} column {label!r}: {row[label_col]!r} is "
                       f"not a return label; allowed: 0, 1, true, false.")
    returned[i] = label_values[value]
  return GraphReturns(
      customer_features=cust_x, variant_features=var_x,
      customer=_event_endpoints(events_path, header, rows, customer_id, customer_index),
      variant=_event_endpoints(events_path, header, rows, variant_id, variant_index),
      event_features=_numeric_columns(events_path, header, rows, names), returned=returned,
      customer_ids=customer_ids, variant_ids=variant_ids)


def save_graph_returns(data: GraphReturns, data_dir: str, *,
                       customer_columns: Optional[Sequence[str]] = None,
                       variant_columns: Optional[Sequence[str]] = None,
                       event_columns: Optional[Sequence[str]] = None) -> None:
  """Writes ``data`` as the three CSV files :func:`load_graph_returns` reads (default names).

  Feature values are written exactly (float32 round-trips), so loading gives ``data`` back.

  Args:
    data: the graph.
    data_dir: directory to write into (created if missing).
    customer_columns, variant_columns, event_columns: feature column names, or ``None`` for
      ``x0, x1, ...`` (customers), ``y0, ...`` (variants), ``e0, ...`` (events).
  """
  def names(given, prefix, width):
    given = [f"{prefix}{i}" for i in range(width)] if given is None else list(given)
    if len(given) != width:
      raise ValueError(f"{len(given)} column names given for {width} {prefix!r} features.")
    return given

  def write(name, header, columns):
    with open(os.path.join(data_dir, name), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows(zip(*columns))

  def features(x):
    return [[repr(float(v)) for v in column] for column in np.asarray(x).T]

  os.makedirs(data_dir, exist_ok=True)
  write("customers.csv", ["customer_id", *names(customer_columns, "x",
                                                data.customer_features.shape[1])],
        [data.customer_ids, *features(data.customer_features)])
  write("variants.csv", ["variant_id", *names(variant_columns, "y",
                                              data.variant_features.shape[1])],
        [data.variant_ids, *features(data.variant_features)])
  write("events.csv", ["customer_id", "variant_id", "returned",
                       *names(event_columns, "e", data.event_features.shape[1])],
        [data.customer_ids[data.customer], data.variant_ids[data.variant], data.returned,
         *features(data.event_features)])


def synthetic_graph_returns(seed: int = 0, *, num_customers: int = 1000,
                            num_variants: int = 300, events_per_customer: float = 8.0,
                            feature_noise: float = 1.0) -> GraphReturns:
  """A GraphReturns-shaped graph whose returns depend on customer-variant fit.

  Latent traits: each customer has a true size ``s_c``, a price sensitivity ``p_c`` and a
  return propensity ``r_c``; each variant has a labelled size ``z_v``, a price ``q_v`` and a
  fit bias ``b_v`` (it runs small or large). A customer buys near their size: each purchase
  aims at ``t = s_c + 0.8 eps`` and takes a variant uniformly among the ``2 w + 1`` (``w =
  max(1, num_variants // 50)``) whose size ``z_v + b_v / 2`` (shoppers half-know the fit) is
  nearest to ``t``. Customers make ``1 + Poisson(events_per_customer - 1)`` purchases. The return logit is

  .. math::
    -3.0 + 4.0 |z_v + b_v - s_c| + 0.8 p_c q_v + r_c + 0.8 d_e - 0.4 m_e

  with ``d_e`` the event's discount and ``m_e`` a mobile-app flag. The features see the traits
  only through noise of scale ``feature_noise``: customers report ``s_c, p_c, r_c`` plus noise
  and one pure-noise column; variants show ``z_v``, ``q_v`` and two colour columns but not
  ``b_v``; events show ``d_e, m_e`` and a pure-noise column. The size mismatch is thus poorly
  visible to a per-event model, while the sizes of a customer's other purchases reveal ``s_c``
  and a variant's buyers reveal ``b_v``: the graph carries signal the features do not.

  As in the released data, every variant is bought at least once (an unbought variant gets one
  purchase by a random customer) and every customer has a return (a customer without one has
  the purchase with the highest return probability marked returned).

  Args:
    seed: seed of numpy's generator; the graph is a deterministic function of all arguments.
    num_customers: number of customer nodes (>= 1).
    num_variants: number of variant nodes (>= 1).
    events_per_customer: mean purchases per customer (>= 1; each has at least one).
    feature_noise: standard deviation of the noise on the observed traits (>= 0).

  Returns:
    A :class:`GraphReturns` with 4 customer, 4 variant and 3 event feature columns, events
    sorted by customer, and ids ``"c0", "c1", ...`` / ``"v0", "v1", ...``.

  Example:
    >>> data = synthetic_graph_returns(0, num_customers=200, num_variants=50)
    >>> split = split_events(data.num_events, seed=0)
    >>> len(split.train) + len(split.val) + len(split.test) == data.num_events
    True
  """
  for name, value in (("num_customers", num_customers), ("num_variants", num_variants)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}.")
  if not events_per_customer >= 1:
    raise ValueError(f"events_per_customer must be >= 1, got {events_per_customer!r}.")
  if not feature_noise >= 0:
    raise ValueError(f"feature_noise must be >= 0, got {feature_noise!r}.")
  rng = np.random.default_rng(seed)
  size, price_sensitivity = rng.normal(size=(2, num_customers))
  propensity = 0.7 * rng.normal(size=num_customers)
  labelled_size, price = rng.normal(size=(2, num_variants))
  fit_bias = 0.5 * rng.normal(size=num_variants)

  degree = 1 + rng.poisson(events_per_customer - 1, size=num_customers)
  customer = np.repeat(np.arange(num_customers), degree)
  order = np.argsort(labelled_size + fit_bias / 2)
  shopped_size = (labelled_size + fit_bias / 2)[order]
  target = size[customer] + 0.8 * rng.normal(size=customer.size)
  window = max(1, num_variants // 50)
  nearest = np.searchsorted(shopped_size, target) + rng.integers(-window, window + 1,
                                                                  customer.size)
  variant = order[np.clip(nearest, 0, num_variants - 1)]
  unbought = np.setdiff1d(np.arange(num_variants), variant)
  customer = np.concatenate([customer, rng.integers(0, num_customers, unbought.size)])
  variant = np.concatenate([variant, unbought])
  by_customer = np.argsort(customer, kind="stable")
  customer, variant = customer[by_customer], variant[by_customer]

  num_events = customer.size
  discount = rng.uniform(size=num_events)
  mobile = rng.integers(0, 2, num_events).astype(np.float64)
  logit = (-3.0 + 4.0 * np.abs(labelled_size[variant] + fit_bias[variant] - size[customer]) +
           0.8 * price_sensitivity[customer] * price[variant] + propensity[customer] +
           0.8 * discount - 0.4 * mobile)
  probability = 1 / (1 + np.exp(-logit))
  returned = (rng.uniform(size=num_events) < probability).astype(np.int32)
  # Condition on the released data's selection: each customer returned something.
  has_return = np.zeros(num_customers, bool)
  has_return[customer[returned == 1]] = True
  by_probability = np.lexsort((-probability, customer))  # each customer's likeliest first
  likeliest = by_probability[np.searchsorted(customer[by_probability], np.arange(num_customers))]
  returned[likeliest[~has_return]] = 1

  def noisy(x):
    return x + feature_noise * rng.normal(size=x.shape)

  customer_features = np.stack([noisy(size), noisy(price_sensitivity), noisy(propensity),
                                rng.normal(size=num_customers)], axis=1)
  variant_features = np.stack([labelled_size, price, *rng.normal(size=(2, num_variants))], axis=1)
  event_features = np.stack([discount, mobile, rng.normal(size=num_events)], axis=1)
  return GraphReturns(
      customer_features=customer_features.astype(np.float32),
      variant_features=variant_features.astype(np.float32),
      customer=customer.astype(np.int32), variant=variant.astype(np.int32),
      event_features=event_features.astype(np.float32), returned=returned,
      customer_ids=np.asarray([f"c{i}" for i in range(num_customers)]),
      variant_ids=np.asarray([f"v{i}" for i in range(num_variants)]))


def split_events(num_events: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), *,
                 seed: int = 0) -> EventSplit:
  """A uniformly random train / validation / test split of ``num_events`` events.

  Args:
    num_events: number of events to split.
    fractions: three non-negative fractions summing to 1; the test set takes the remainder
      after rounding the first two.
    seed: seed of numpy's generator.

  Returns:
    An :class:`EventSplit` of sorted int32 index arrays.
  """
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                     f"got {fractions}.")
  permutation = np.random.default_rng(seed).permutation(num_events).astype(np.int32)
  num_train = int(round(fractions[0] * num_events))
  num_val = int(round(fractions[1] * num_events))
  return EventSplit(np.sort(permutation[:num_train]),
                    np.sort(permutation[num_train:num_train + num_val]),
                    np.sort(permutation[num_train + num_val:]))


def standardize_features(data: GraphReturns,
                         train_events: Optional[np.ndarray] = None) -> GraphReturns:
  """``data`` with every feature column shifted and scaled to mean 0, variance 1.

  Node columns use statistics over all nodes (node features are known for every node); event
  columns use the ``train_events`` only, so no statistic of held-out events leaks into
  training. Constant columns are only centred.

  Args:
    data: the graph.
    train_events: indices of the training events, or ``None`` for all events.

  Returns:
    A :class:`GraphReturns` with float32 standardized features and the same graph and labels.
  """
  def standardized(x, rows):
    reference = x if rows is None else x[rows]
    std = reference.std(axis=0)
    return ((x - reference.mean(axis=0)) / np.where(std > 0, std, 1)).astype(np.float32)

  return data._replace(customer_features=standardized(data.customer_features, None),
                       variant_features=standardized(data.variant_features, None),
                       event_features=standardized(data.event_features, train_events))


GRAPH = "graph"  # the flax variable collection holding the message graph
# The message graph's arrays, in the order of the graph wing's MessageGraph fields.
MESSAGE_GRAPH_FIELDS = ("customer_features", "variant_features", "customer", "variant",
                        "event_features")


def event_inputs(data: GraphReturns, events: Optional[np.ndarray] = None) -> np.ndarray:
  """Launcher rows of events: ``[customer index, variant index, event features...]``.

  The indices are stored as float32 (exact below 2**24 nodes) so that one array holds the row.

  Args:
    data: the purchase graph.
    events: event indices, or ``None`` for all events.

  Returns:
    A float32 ``(len(events), 2 + event_dim)`` numpy array.
  """
  events = np.arange(data.num_events) if events is None else np.asarray(events)
  return np.concatenate([data.customer[events, None], data.variant[events, None],
                         data.event_features[events]], axis=1).astype(np.float32)


def graph_variables(data: GraphReturns, events: Optional[np.ndarray] = None) -> dict:
  """``{GRAPH: {field: array}}``: the message graph over ``events`` (default all), numpy.

  The labels are left out: messages never carry an event's return label.
  """
  events = np.arange(data.num_events) if events is None else np.asarray(events)
  arrays = (data.customer_features, data.variant_features, data.customer[events],
            data.variant[events], data.event_features[events])
  return {GRAPH: {k: np.asarray(v) for k, v in zip(MESSAGE_GRAPH_FIELDS, arrays)}}
