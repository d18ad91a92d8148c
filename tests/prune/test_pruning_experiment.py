"""Smoke test: the pruning experiment's entry point runs offline and writes its JSON and PNG."""

import importlib.util
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_pruning_experiment_smoke_run_writes_results(tmp_path):
  experiment = load(ROOT / "experiments" / "pruning.py")
  config = load(ROOT / "configs" / "pruning.py").get_config("smoke")
  config.models = {"mlp": {"name": "mlp", "hidden": (8,)}}
  config.sparsities = (0.5,)
  config.train.num_steps = 5
  config.surgeon.fit_steps = 3
  config.surgeon.refine_steps = 2
  config.gradual.fine_tune_steps = 2
  results = experiment.run_experiment(config, str(tmp_path))
  assert set(results["mlp"]["gradual"]) == {"fishleg", "diagonal_fisher", "magnitude"}
  assert json.loads((tmp_path / "pruning.json").read_text())["mlp"]["oneshot"]["fishleg"]["0.5"]
  assert os.path.getsize(tmp_path / "pruning.png") > 0
