"""experiments/treemaml_synthetic.py: launcher runs per seed, pooled intervals, outputs."""

import importlib.util
import json
import os

import numpy as np
import pytest

from gnrev import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _experiment():
  spec = importlib.util.spec_from_file_location(
      "treemaml_experiment", os.path.join(REPO, "experiments", "treemaml_synthetic.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ts = _experiment()


def test_pooled_interval_over_seeds_is_the_interval_over_all_their_batches():
  rng = np.random.default_rng(0)
  losses = {seed: rng.gamma(2.0, size=(5, 3)) + seed for seed in (0, 1)}  # 5 batches, K = 2
  finals = {seed: {"maml": {
      **{f"test_loss_step_{k}": float(l[:, k].mean()) for k in range(3)},
      **{f"test_loss_std_step_{k}": float(l[:, k].std()) for k in range(3)},
      **{f"test_ari_step_{k}": 0.5 * seed for k in (1, 2)}}} for seed, l in losses.items()}
  got = ts.pooled(finals, "maml", num_steps=2, num_batches=5)
  every = np.concatenate(list(losses.values()))
  np.testing.assert_allclose(got["mean"], every.mean(0), rtol=1e-12)
  np.testing.assert_allclose(got["ci95"], 1.96 * every.std(0) / np.sqrt(10), rtol=1e-12)
  assert got["ari_vs_true_tree_per_step"] == [0.25, 0.25]


@pytest.mark.parametrize("name", ["treemaml_linear.py", "treemaml_sinusoid.py"])
def test_smoke_configs_are_launcher_configs_with_one_run_per_inner_rule(name):
  config = train.load_config(os.path.join(REPO, "configs", name), "smoke")
  assert config.task.name == "meta_learning"
  assert set(config.optimizers) == {"no_adaptation", "maml", "shared_first_step",
                                    "treemaml_true", "treemaml_learned"}
  train.check_config(config)


def test_smoke_experiment_runs_the_launcher_per_seed_and_writes_where_asked(tmp_path):
  config = train.load_config(os.path.join(REPO, "configs", "treemaml_linear.py"), "smoke")
  for run in ("no_adaptation", "shared_first_step"):
    del config.optimizers[run]
  summary = ts.run_experiment(config, str(tmp_path / "runs"), seeds=(0, 1), tag="_smoke",
                              results_dir=str(tmp_path / "out"))
  assert sorted(os.listdir(tmp_path / "out")) == ["treemaml_linear_smoke.json",
                                                  "treemaml_linear_smoke.png"]
  assert {"seed_0", "seed_1"} <= set(os.listdir(tmp_path / "runs"))
  runs = summary["query_mse_per_inner_step"]
  assert set(runs) == {"maml", "treemaml_true", "treemaml_learned"}
  assert runs["treemaml_true"]["ari_vs_true_tree_per_step"] == [1.0, 1.0, 1.0]
  assert all(len(r["mean"]) == 4 and np.all(np.isfinite(r["ci95"])) for r in runs.values())
  with open(tmp_path / "out" / "treemaml_linear_smoke.json") as f:
    assert json.load(f)["seeds"] == [0, 1]
  records = train.read_metrics(str(tmp_path / "runs" / "seed_1"))
  assert {r["run"] for r in records} == set(config.optimizers)
