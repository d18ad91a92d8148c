"""experiments/gn_generalization.py: smoke mode end to end, and its configs."""

import importlib.util
import json
import math
import os

import pytest

from gnrev import train
from gnrev.train import validation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "gn_generalization.py")


def load_experiment():
  path = os.path.join(REPO, "experiments", "gn_generalization.py")
  spec = importlib.util.spec_from_file_location("gn_generalization", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_smoke_run_writes_figures_and_numbers_for_every_finding_it_ran(tmp_path):
  experiment = load_experiment()
  out = tmp_path / "out"
  results = experiment.main(["--findings", "fullbatch,minibatch", "--size", "smoke",
                             "--out", str(out), "--workdir", str(tmp_path / "runs")])
  expected = ["gn_generalization_fullbatch.json", "gn_generalization_fullbatch.png",
              "gn_generalization_minibatch.json", "gn_generalization_minibatch.png",
              "gn_generalization_minibatch_laziness.png"]
  assert sorted(os.listdir(out)) == expected
  for name in expected:
    assert os.path.getsize(out / name) < 300_000
  minibatch = json.loads((out / "gn_generalization_minibatch.json").read_text())  # strict JSON
  assert set(minibatch["summary"]) == {"exact_gn", "adam", "sgd"}
  for run, curves in minibatch["curves"].items():
    # Epoch 0 is the init: similarity 1; later epochs moved away from it but stay in [-1, 1].
    assert curves["laz_ntk_to_init"]["mean"][0] == 1.0
    assert curves["laz_cka_block_2"]["mean"][0] == 1.0
    assert all(abs(v) <= 1.0 + 1e-5 for v in curves["laz_cka_block_1"]["mean"])
    assert len(curves["test_loss"]["mean"]) == 3       # init + 2 epochs
    assert len(curves["loss_change_pct"]["mean"]) == 2
  assert 0.0 <= minibatch["gn_residual"]["exact_gn"]["42"]["init"]["residual"] < 1.0
  # Laziness every 2nd epoch from the same checkpoints: epoch 1 unmeasured (NaN), epoch 2 the
  # value measured every epoch (same probes, same params).
  config = experiment.finding_config("minibatch", "smoke", "digits")
  config.analysis.every_epochs = 2
  sparse = experiment.laziness(config, str(tmp_path / "runs" / "minibatch_smoke_digits"), 42,
                               "adam")
  dense = minibatch["curves"]["adam"]["laz_ntk_to_init"]["mean"]
  assert sparse["ntk_to_init"][0] == 1.0 and sparse["ntk_to_init"][1] != sparse["ntk_to_init"][1]
  assert sparse["ntk_to_init"][2] == pytest.approx(dense[2], rel=1e-4)
  config.analysis.every_epochs = 3
  with pytest.raises(ValueError, match="every_epochs must be a positive divisor of num_epochs=2"):
    experiment.laziness(config, str(tmp_path / "runs" / "minibatch_smoke_digits"), 42, "adam")
  # Full batch: every seed ran every optimizer and GN decreased the training loss.
  fullbatch = results["fullbatch"]
  gn_loss = fullbatch["curves"]["exact_gn"]["train_loss"]["mean"]
  assert gn_loss[-1] < gn_loss[0]
  # The same finding named by its config (the runs resume: nothing trains again); without --out
  # its results go under the workdir, per size.
  again = experiment.main([f"--config={CONFIG}:fullbatch,smoke", "--workdir",
                           str(tmp_path / "runs")])
  assert set(again) == {"fullbatch"}
  assert (tmp_path / "runs" / "results" / "smoke" / "gn_generalization_fullbatch.json").exists()


@pytest.mark.parametrize("finding", ["fullbatch", "minibatch", "nobottleneck", "ablations"])
@pytest.mark.parametrize("size", ["", ",smoke", ",paper_mnist5k", ",paper_mnist", ",paper_cifar"])
def test_every_finding_and_size_gives_a_valid_launcher_config(finding, size):
  config = train.load_config(CONFIG, finding + size)
  validation.check_config(config, train.build_task(config))   # the config alone: paper sizes need data files
  assert config.finding == finding
  assert (config.model.expansion is None) == (finding == "nobottleneck")
  gn_runs = [c for c in config.optimizers.values() if c.name == "exact_gn"]
  assert gn_runs and all(c.solver in ("svd", "damped") for c in gn_runs)


def test_conflicting_config_arguments_are_rejected():
  with pytest.raises(ValueError, match="at most one finding"):
    train.load_config(CONFIG, "fullbatch,minibatch")
  with pytest.raises(ValueError, match="Unknown config argument"):
    train.load_config(CONFIG, "fulbatch")


def test_lr_sweep_on_a_validation_split_chooses_by_the_validation_loss(tmp_path, monkeypatch):
  experiment = load_experiment()
  base = experiment.finding_config

  def small_grid(*args):
    config = base(*args)
    config.lr_grid = {"exact_gn": (0.1, 1.0), "adam": (1e-3,), "sgd": (0.3,)}
    return config

  monkeypatch.setattr(experiment, "finding_config", small_grid)
  result = experiment.lr_sweep("minibatch", "smoke", "digits", str(tmp_path / "runs"),
                               str(tmp_path), validation_fraction=0.25, num_epochs=1)
  assert result["criterion"] == "final_val_loss" and result["num_epochs"] == 1
  assert result["validation_fraction"] == 0.25
  gn = {k: v for k, v in result["runs"].items() if k.startswith("exact_gn")}
  assert len(gn) == 2 and all(math.isfinite(v["final_val_loss"]) for v in gn.values())
  chosen = min(gn.values(), key=lambda v: v["final_val_loss"])["learning_rate"]
  assert result["best_learning_rate"]["exact_gn"] == chosen
  written = json.loads((tmp_path / "gn_generalization_minibatch_lr_sweep.json").read_text())
  assert written["best_learning_rate"] == result["best_learning_rate"]


def test_tuned_step_sizes_only_where_a_sweep_chose_them():
  config = train.load_config(CONFIG, "fullbatch,paper_mnist5k,tuned")
  validation.check_config(config, train.build_task(config))
  paper = train.load_config(CONFIG, "fullbatch,paper_mnist5k")
  assert config.tuned and not paper.tuned
  assert [config.optimizers[r].learning_rate for r in ("exact_gn", "adam", "sgd")] == [2.0, 3e-4,
                                                                                        0.3]
  assert config.optimizers.exact_gn.rtol == paper.optimizers.exact_gn.rtol == 1e-2
  with pytest.raises(ValueError, match="No tuned step sizes for 'minibatch' at size 'default'"):
    train.load_config(CONFIG, "minibatch,tuned")
  minibatch = train.load_config(CONFIG, "minibatch,paper_mnist5k,tuned")
  assert [minibatch.optimizers[r].learning_rate for r in ("exact_gn", "adam", "sgd")] == [
      2.0, 1e-4, 0.3]
  with pytest.raises(ValueError, match="No tuned step sizes for 'nobottleneck' at size 'paper_"):
    train.load_config(CONFIG, "nobottleneck,paper_mnist5k,tuned")
  experiment = load_experiment()
  assert experiment._stem("o", "fullbatch", "mnist5k", tuned=True) == os.path.join(
      "o", "gn_generalization_fullbatch_mnist5k_tuned")
