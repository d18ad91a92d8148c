"""Smoke test: the pruning experiment runs its launcher configs and tabulates their metrics."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_pruning_experiment_smoke_run_goes_through_the_trainer_and_reads_its_metrics(tmp_path):
  experiment = load(ROOT / "experiments" / "pruning.py")
  configs = load(ROOT / "configs" / "pruning.py")
  experiment.run_model("mlp", [0], str(tmp_path), smoke=True)
  # Dense stage, then every variant from its checkpoint: launcher workdirs, one metrics.jsonl.
  assert (tmp_path / "mlp_s0" / "dense" / "adam" / "checkpoints").is_dir()
  prune_config = configs.get_config("smoke,stage=prune")
  records = [json.loads(line) for line in
             (tmp_path / "mlp_s0" / "prune" / "metrics.jsonl").read_text().splitlines()]
  assert {r["run"] for r in records} == set(prune_config.optimizers)
  results = experiment.analyse(str(tmp_path), ["mlp"], [0])
  table = results["accuracy"]["mlp"]
  assert set(table) == {f"{m}_{v}" for m in configs.METHODS
                        for v in ("global_oneshot", "layer_cubic")}
  one_shot = table["fishleg_surgeon_global_oneshot"]
  assert set(one_shot) == {"0.5", "0.9"} and len(one_shot["0.5"]["no_ft"]) == 1
  assert 0 <= one_shot["0.9"]["ft"][0] <= 1
  assert "diagonal_fisher" in results["fls_margin"]["mlp"]["global_oneshot_no_ft"]
  assert "fishleg_surgeon_global_oneshot" in experiment.markdown(results)
  experiment.plot(results, str(tmp_path / "pruning.png"))
  assert (tmp_path / "pruning.png").stat().st_size > 0


def test_pruning_config_rejects_unknown_model_and_stage():
  configs = load(ROOT / "configs" / "pruning.py")
  with pytest.raises(ValueError, match="Unknown model 'vgg'; allowed: mlp, cnn"):
    configs.get_config("model=vgg")
  with pytest.raises(ValueError, match="Unknown stage 'tune'; allowed: dense, prune"):
    configs.get_config("stage=tune")
