"""Launcher return models: event rows plus the ``graph`` collection give the library's logits."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gnrev import data, graphs, train
from gnrev.data import graph_returns
from gnrev.train import sharding, supervised

OPTIONS = {"num_customers": 12, "num_variants": 6, "events_per_customer": 3.0}


def launcher_model(name, **fields):
  return train.build_model(ml_collections.ConfigDict({"name": name, **fields}), num_classes=2)


def init_params(model, dataset):
  return model.apply(dataset.variables, dataset.x[:1], rngs={"params": jax.random.key(0)},
                     mutable=True)[1]["params"]


def library_view(dataset):
  """The message graph and the queried events as the library models take them."""
  graph = graphs.MessageGraph(**{k: jnp.asarray(v) for k, v in
                                 dataset.variables[graphs.GRAPH].items()})
  customer, variant = dataset.x[:, 0].astype(np.int32), dataset.x[:, 1].astype(np.int32)
  return graph, customer, variant, dataset.x[:, 2:]


def test_launcher_train_step_on_gnn_is_sgd_on_the_library_gnns_binary_cross_entropy():
  dataset = data.load_dataset("graph_returns", "train", **OPTIONS)
  model = launcher_model("gnn", hidden_size=4, num_rounds=1, edge_hidden_sizes=[5])
  params = init_params(model, dataset)
  graph, customer, variant, features = library_view(dataset)
  gnn = graphs.BipartiteGNN(hidden_size=4, num_rounds=1, edge_hidden_sizes=(5,))
  library_loss = lambda p: graphs.binary_cross_entropy(
      gnn.apply({"params": p["edge_model"]}, graph, customer, variant, features), dataset.y)

  setup = train.OptimizerSetup(optax.with_extra_args_support(optax.sgd(0.5)),
                               lambda *args: {})
  state = train.TrainState.create(params, setup.tx.init(params), jax.random.key(1), 3)
  step = train.make_train_step(model, setup, train.edge_classification())
  targets = data.one_hot(dataset.y, 2)
  new_state, metrics = step(state, dataset.variables, dataset.x, targets)

  np.testing.assert_allclose(metrics["train_loss"], library_loss(params), rtol=1e-5)
  expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, jax.grad(library_loss)(params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               new_state.params, expected)

  # The graph is an argument of the step, not a constant: another graph of the same shapes
  # changes the loss and reuses the compilation.
  moved = {graphs.GRAPH: {**dataset.variables[graphs.GRAPH], "event_features":
                          2.0 * dataset.variables[graphs.GRAPH]["event_features"]}}
  _, moved_metrics = step(state, moved, dataset.x, targets)
  assert abs(float(moved_metrics["train_loss"]) - float(metrics["train_loss"])) > 1e-6
  assert step._cache_size() == 1


def test_launcher_replicates_the_graph_and_a_sharded_step_matches_the_single_device_one():
  dataset = data.load_dataset("graph_returns", "train", **OPTIONS)
  model = launcher_model("gnn", hidden_size=4, num_rounds=1, edge_hidden_sizes=[5])
  setup = train.build_optimizer(ml_collections.ConfigDict({"name": "adam",
                                                           "learning_rate": 0.1}), model,
                                train.edge_classification())
  config = ml_collections.ConfigDict({"seed": 0})
  x, y = dataset.x[:8], data.one_hot(dataset.y[:8], 2)
  results = []
  for num_devices in (1, 2):
    mesh = train.make_mesh(num_devices)
    params, fixed = supervised._variables(config, model, dataset, mesh)
    state = sharding.replicate(mesh, train.TrainState.create(
        params, setup.tx.init(params), jax.random.key(1),
        len(supervised.epoch_sum_names(train.edge_classification()))))
    assert all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == num_devices
               for leaf in jax.tree.leaves(fixed[graphs.GRAPH]))
    state, metrics = train.make_train_step(model, setup, train.edge_classification())(
        state, fixed, *sharding.shard_batch(mesh, x, y))
    results.append((metrics["train_loss"], state.params))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               results[0][1], results[1][1])


@pytest.mark.parametrize("name,fields,hidden", [("edge_mlp", {"hidden_sizes": [7]}, (7,)),
                                                ("logreg", {}, ())])
def test_per_event_launcher_models_see_the_tabular_features_of_each_event(name, fields, hidden):
  dataset = data.load_dataset("graph_returns", "test", **OPTIONS)
  model = launcher_model(name, **fields)
  params = init_params(model, dataset)
  graph, customer, variant, features = library_view(dataset)
  table = jnp.concatenate([graph.customer_features[customer], graph.variant_features[variant],
                           features], axis=1)
  edge_logits = graphs.MLPClassifier(hidden).apply({"params": params["edge_model"]}, table)
  logits = model.apply({"params": params, **dataset.variables}, dataset.x)
  np.testing.assert_allclose(logits[:, 1], edge_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(logits[:, 0], 0.0)


def test_event_rows_hold_each_events_customer_variant_and_features():
  raw = graph_returns.synthetic_graph_returns(0, num_customers=12, num_variants=6)
  events = np.array([5, 0, 3])
  rows = graphs.event_inputs(raw, events)
  np.testing.assert_array_equal(rows[:, 0], raw.customer[events])
  np.testing.assert_array_equal(rows[:, 1], raw.variant[events])
  np.testing.assert_array_equal(rows[:, 2:], raw.event_features[events])


def test_event_classifier_needs_two_classes_and_the_graph_collection():
  with pytest.raises(ValueError, match="predicts 2 classes.*num_classes=10"):
    graphs.logreg_classifier(num_classes=10)
  with pytest.raises(ValueError, match="needs the message graph as the 'graph' variable"):
    graphs.logreg_classifier().init(jax.random.key(0), jnp.ones((2, 5)))


def test_the_data_layers_graph_encoding_has_the_message_graphs_fields():
  # gnrev.data encodes the graph without importing the graph wing; the names must agree.
  assert graph_returns.MESSAGE_GRAPH_FIELDS == graphs.MessageGraph._fields
  assert graph_returns.GRAPH == graphs.GRAPH
