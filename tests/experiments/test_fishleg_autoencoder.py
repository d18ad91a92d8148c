"""experiments/fishleg_autoencoder.py: the smoke size end to end through the trainer."""

import importlib.util
import json
import os

import pytest

from gnrev import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "fishleg_autoencoder.py")


def load_experiment():
  path = os.path.join(REPO, "experiments", "fishleg_autoencoder.py")
  spec = importlib.util.spec_from_file_location("fishleg_autoencoder", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_smoke_run_writes_curves_summary_and_figure_per_init_and_resumes(tmp_path):
  experiment = load_experiment()
  args = ["--seeds=0", "--runs=fishleg+adam_1em3", "--inits=flax,pytorch", f"--config={CONFIG}:smoke",
          f"--workdir={tmp_path}"]
  results = experiment.main(args)
  out = tmp_path / "out"
  assert (out / "fishleg_autoencoder.png").stat().st_size > 0
  written = json.loads((out / "fishleg_autoencoder.json").read_text())
  assert set(written["runs"]) == {"flax", "pytorch"}
  for init in ("flax", "pytorch"):
    assert set(written["runs"][init]) == {"fishleg", "adam_1em3"}
    for run in ("fishleg", "adam_1em3"):
      curve = written["curves"][init][run][0]
      assert curve["seed"] == 0 and curve["step"][0] == 0 and curve["step"][-1] == 4
      assert len(curve["time"]) == len(curve["test_loss"]) and curve["seconds"] > 0
      summary = written["runs"][init][run]
      assert summary["finite"] and summary["best_test_nll_mean"] <= summary[
          "final_test_nll_mean"]
    assert written["verdict"][init]["best_adam_by_train_nll"] == "adam_1em3"
  assert results["verdict"] == written["verdict"]
  # A second call finds every (seed, run, init) done and trains nothing.
  again = experiment.main(args)
  assert again["curves"] == written["curves"]
  # --resummarise rebuilds summary, verdict and figure from the written curves alone.
  (out / "fishleg_autoencoder.png").unlink()
  resummarised = experiment.main([f"--resummarise={out / 'fishleg_autoencoder.json'}"])
  assert resummarised["verdict"] == results["verdict"]
  assert (out / "fishleg_autoencoder.png").stat().st_size > 0


def test_config_lists_the_comparison_and_sets_the_init():
  config = train.load_config(CONFIG, "init=pytorch,validation=0.2")
  assert config.model.param_init == "pytorch" and config.data.validation_fraction == 0.2
  names = {run: opts.name for run, opts in config.optimizers.items()}
  assert config.optimizers.fishleg_per_example.q_family == "kronecker_per_example"
  assert names == {"fishleg": "fishleg", "fishleg_per_example": "fishleg",
                   "fishleg_official": "fishleg_official",
                   "adam_1em4": "adam", "adam_3em4": "adam", "adam_1em3": "adam",
                   "adam_3em3": "adam", "sgd_momentum": "sgd", "sophia": "sophia",
                   "muon": "muon", "psgd_kron": "psgd_kron"}
  with pytest.raises(ValueError, match="init 'torch'.*flax, pytorch"):
    train.load_config(CONFIG, "init=torch")


def test_a_stopped_run_is_trained_again_and_its_partial_curve_replaced(tmp_path):
  experiment = load_experiment()
  out = tmp_path / "out"
  out.mkdir()
  partial = {"seed": 0, "step": [0], "test_loss": [500.0], "time": [0.0], "train_step": [1],
             "train_loss": [600.0], "skipped": 0, "last_step": 1, "seconds": 1.0,
             "process_seconds": 1.0, "finished": False}
  (out / "fishleg_autoencoder.json").write_text(json.dumps(
      {"layout": experiment.LAYOUT, "smoke": True, "num_epochs": 50,
       "curves": {"flax": {"adam_1em3": [partial]}}}))
  results = experiment.main(["--seeds=0", "--runs=adam_1em3", "--inits=flax",
                             f"--config={CONFIG}:smoke", f"--workdir={tmp_path}"])
  (curve,) = results["curves"]["flax"]["adam_1em3"]
  assert curve.get("finished", True) and curve["last_step"] == 4 and curve["step"][-1] == 4


@pytest.mark.parametrize("run", ["fishleg_official", "sophia", "muon", "psgd_kron"])
def test_every_peer_trains_the_smoke_autoencoder_through_the_launcher_config(run, tmp_path):
  config = train.load_config(CONFIG, f"smoke,runs={run}")
  result = train.train_and_evaluate(config, str(tmp_path))[run]
  assert result["step"] == 4 and result["test_loss"] < 1e4, result
