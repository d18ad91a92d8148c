"""experiments/graph_returns.py: the launcher config, the two-class likelihood, the smoke run."""

import importlib.util
import json
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gnrev import curvature, graphs, train
from gnrev.data import graph_returns

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
  raw = graph_returns.standardize_features(
      graph_returns.synthetic_graph_returns(0, num_customers=6, num_variants=4,
                                            events_per_customer=2.0))
  model = train.build_model(ml_collections.ConfigDict(
      {"name": "gnn", "hidden_size": 3, "num_rounds": 1, "edge_hidden_sizes": (4,)}), 2)
  to64 = lambda a: a.astype(np.float64) if a.dtype == np.float32 else a  # noqa: E731
  fixed = jax.tree.map(lambda a: jnp.asarray(to64(a)), graph_returns.graph_variables(raw))
  x = jnp.asarray(graph_returns.event_inputs(raw, np.arange(5)), jnp.float64)
  params = model.apply(fixed, x, rngs={"params": jax.random.key(0)}, mutable=True)[1]["params"]
  params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
  return model, params, fixed, x, jnp.asarray(raw.returned[:5])


@pytest.mark.x64
def test_edge_task_loss_is_the_binary_cross_entropy_of_the_edge_logit():
  model, params, fixed, x, labels = _tiny_gnn()
  task = train.edge_classification()
  logits = model.apply({"params": params, **fixed}, x)
  np.testing.assert_array_equal(logits[:, 0], 0.0)
  np.testing.assert_allclose(task.loss(logits, jax.nn.one_hot(labels, 2)),
                             graphs.binary_cross_entropy(logits[:, 1], labels), rtol=1e-12)


@pytest.mark.x64
def test_edge_task_fisher_product_equals_dense_bernoulli_fisher_of_edge_logit():
  model, params, fixed, x, _ = _tiny_gnn()
  edge_logit = lambda p, inputs: model.apply({"params": p, **fixed}, inputs)[:, 1]  # noqa: E731
  jacobian, unravel = curvature.dense_jacobian(edge_logit, params, x)
  p = jax.nn.sigmoid(edge_logit(params, x))
  dense_fisher = jacobian.T @ (jacobian * (p * (1 - p))[:, None]) / p.size
  v_flat = jax.random.normal(jax.random.key(1), (jacobian.shape[1],), jnp.float64)
  task = train.edge_classification()
  setup = train.build_optimizer(ml_collections.ConfigDict({"name": "fishleg",
                                                           "learning_rate": 0.1}), model, task)
  fvp = setup.extra_args(params, fixed, (x, None), jax.random.key(2))["fvp_fn"]
  got, _ = jax.flatten_util.ravel_pytree(fvp(unravel(v_flat)))
  np.testing.assert_allclose(got, dense_fisher @ v_flat, rtol=1e-10, atol=1e-12)


def test_config_model_and_seed_arguments_pick_the_runs_and_every_seed():
  assert set(train.load_config(CONFIG, "model=gnn").optimizers) == {"adam", "fishleg"}
  assert set(train.load_config(CONFIG, "model=edge_mlp").optimizers) == {"adam", "gauss_newton"}
  assert set(train.load_config(CONFIG, "model=logreg").optimizers) == {"adam"}
  config = train.load_config(CONFIG, "seed=3")
  assert (config.seed, config.data.seed, config.data.validation_seed,
          config.data.options.seed) == (3, 3, 3, 3)
  with pytest.raises(ValueError, match="Unknown model 'rf'"):
    train.load_config(CONFIG, "model=rf")


def test_validation_events_come_from_the_training_events_never_the_test_ones():
  config = train.load_config(CONFIG, "smoke")
  train_split, val, test = train.load_splits(config)
  rows = lambda d: {r.tobytes() for r in d.x}  # noqa: E731
  assert val is not None and not rows(val) & rows(test) and not rows(val) & rows(train_split)


def test_smoke_experiment_launches_every_model_and_writes_table_race_json_and_plot(tmp_path):
  # Two of the three models keep the test short; edge_mlp's runs are the launcher smoke test's.
  summary = gr.run_experiment(str(tmp_path / "runs"), seeds=(0,), models=("logreg", "gnn"),
                              smoke=True, results_dir=str(tmp_path / "out"))
  assert {"graph_returns.json", "graph_returns.png"} <= set(os.listdir(tmp_path / "out"))
  assert set(summary["table"]) == {"logreg/adam", "gnn/adam", "gnn/fishleg"}
  for scores in summary["table"].values():
    assert all(np.isfinite(scores[m]["mean"]) for m in gr.METRICS)
  assert {"f1_gain", "cross_entropy_drop"} <= set(summary["gnn_vs_best_per_event"])
  [race] = summary["fishleg_vs_adam_gnn"]
  assert race["adam_steps"] is not None and race["fishleg_seconds_per_step"] > 0
  # The table's scores are the records' test scores at the best validation evaluation.
  records = train.read_metrics(str(tmp_path / "runs" / "gnn" / "seed_0"))
  best = min((r for r in records if r["run"] == "adam" and "val_loss" in r),
             key=lambda r: r["val_loss"])
  assert summary["table"]["gnn/adam"]["f1"]["mean"] == best["test_f1"]
  with open(tmp_path / "out" / "graph_returns.json") as f:
    assert json.load(f)["runs"]["gnn/adam"][0]["best_step"] == best["step"]
