"""experiments/graph_returns.py: the two-class adapter's likelihood and curvature, end to end."""

import importlib.util
import json
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import curvature, graphs
from gnrev.data import graph_returns
from gnrev.train import cross_entropy, fisher_vector_product, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "graph_returns.py")


def _experiment():
  spec = importlib.util.spec_from_file_location(
      "graph_returns_experiment", os.path.join(REPO, "experiments", "graph_returns.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gr = _experiment()


def _tiny_gnn():
  data = graph_returns.standardize_features(
      graph_returns.synthetic_graph_returns(0, num_customers=6, num_variants=4,
                                            events_per_customer=2.0))
  model, select = gr.edge_model("gnn", {"hidden_size": 3, "num_rounds": 1,
                                        "edge_hidden_sizes": (4,)})
  graph = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a,
                       gr.shared_inputs("gnn", data))
  inputs = select(graph, jnp.arange(5))
  params = model.init(jax.random.key(0), inputs)["params"]
  params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
  return model, params, inputs, jnp.asarray(data.returned[:5])


@pytest.mark.x64
def test_two_class_softmax_cross_entropy_is_the_binary_cross_entropy_of_the_edge_logit():
  model, params, inputs, labels = _tiny_gnn()
  logits = model.apply({"params": params}, inputs)
  np.testing.assert_array_equal(logits[:, 0], 0.0)
  np.testing.assert_allclose(cross_entropy(logits, jax.nn.one_hot(labels, 2)),
                             graphs.binary_cross_entropy(logits[:, 1], labels), rtol=1e-12)


@pytest.mark.x64
def test_registry_fisher_of_two_class_model_equals_dense_bernoulli_fisher_of_edge_logit():
  model, params, inputs, _ = _tiny_gnn()
  edge_logit = lambda p, x: model.apply({"params": p}, x)[:, 1]  # noqa: E731
  jacobian, unravel = curvature.dense_jacobian(edge_logit, params, inputs)
  p = jax.nn.sigmoid(edge_logit(params, inputs))
  dense_fisher = jacobian.T @ (jacobian * (p * (1 - p))[:, None]) / p.size
  v_flat = jax.random.normal(jax.random.key(1), (jacobian.shape[1],), jnp.float64)
  fvp = fisher_vector_product(model, params, {}, inputs)
  got, _ = jax.flatten_util.ravel_pytree(fvp(unravel(v_flat)))
  np.testing.assert_allclose(got, dense_fisher @ v_flat, rtol=1e-10, atol=1e-12)


def test_config_model_argument_keeps_only_that_models_runs():
  assert load_config(CONFIG, "model=gnn").runs == ("gnn/adam", "gnn/fishleg")
  assert load_config(CONFIG, "model=mlp").runs == ("mlp/adam", "mlp/gauss_newton")
  assert load_config(CONFIG, "model=logreg").runs == ("logreg/adam",)
  with pytest.raises(ValueError, match="Unknown model 'rf'"):
    load_config(CONFIG, "model=rf")


def test_real_files_in_data_dir_add_a_dataset_next_to_the_synthetic_one(tmp_path):
  graph_returns.save_graph_returns(
      graph_returns.synthetic_graph_returns(5, num_customers=10, num_variants=5), str(tmp_path))
  config = load_config(CONFIG, "smoke")
  assert set(gr.datasets(config, 0)) == {"synthetic"}
  config.data.data_dir = str(tmp_path)
  sets = gr.datasets(config, 0)
  assert set(sets) == {"synthetic", "graph_returns"}
  data, split = sets["graph_returns"]
  assert data.num_customers == 10 and len(split.train) + len(split.val) + len(split.test) == \
      data.num_events


def test_smoke_experiment_writes_table_race_json_and_plot(tmp_path):
  config = load_config(CONFIG, "smoke")
  config.runs = ("logreg/adam", "mlp/gauss_newton", "gnn/adam", "gnn/fishleg")
  summary = gr.run_experiment(config, str(tmp_path))
  assert {"graph_returns.json", "graph_returns.png"} <= set(os.listdir(tmp_path))
  synthetic = summary["synthetic"]
  assert set(synthetic["table"]) == set(config.runs)
  for scores in synthetic["table"].values():
    assert all(np.isfinite(scores[m]["mean"]) for m in gr.METRICS)
  assert {"f1_gain", "cross_entropy_drop"} <= set(synthetic["gnn_vs_best_per_event"])
  assert len(synthetic["fishleg_vs_adam_gnn"]) == len(config.seeds)
  with open(tmp_path / "graph_returns.json") as f:
    results = json.load(f)["results"]["synthetic"]
  curves = results["gnn/adam"][0]["curves"]
  assert curves["step"][0] == 0 and curves["step"][-1] == results["gnn/adam"][0]["stopped_step"]
