"""experiments/fishleg_autoencoder.py: the smoke size end to end through the launcher."""

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_experiment():
  path = os.path.join(REPO, "experiments", "fishleg_autoencoder.py")
  spec = importlib.util.spec_from_file_location("fishleg_autoencoder", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_smoke_run_writes_curves_summary_and_figure_for_each_run(tmp_path):
  experiment = load_experiment()
  config = os.path.join(REPO, "configs", "fishleg_autoencoder.py")
  results = experiment.main(["--seeds=0", "--runs=fishleg+adam_1em3", f"--config={config}:smoke",
                             f"--workdir={tmp_path}"])
  out = tmp_path / "out"
  assert (out / "fishleg_autoencoder.png").stat().st_size > 0
  written = json.loads((out / "fishleg_autoencoder.json").read_text())
  assert set(written["runs"]) == {"fishleg", "adam_1em3"}
  for run in ("fishleg", "adam_1em3"):
    curve = written["curves"][run][0]
    assert curve["step"][0] == 0 and curve["step"][-1] == 4, curve["step"]
    assert len(curve["time"]) == len(curve["test_loss"]) and curve["seconds"] > 0
    assert written["runs"][run]["finite"]
  assert written["verdict"]["best_adam"] == "adam_1em3"
  assert results["verdict"] == written["verdict"]
  # --resummarise rebuilds summary, verdict and figure from the written curves alone.
  (out / "fishleg_autoencoder.png").unlink()
  again = experiment.main([f"--resummarise={out / 'fishleg_autoencoder.json'}"])
  assert again["verdict"] == results["verdict"]
  assert (out / "fishleg_autoencoder.png").stat().st_size > 0
  for run in ("fishleg", "adam_1em3"):
    summary = again["runs"][run]
    assert summary["best_test_nll_mean"] <= summary["final_test_nll_mean"]
    assert 0 < summary["last_epoch_train_nll_mean"] <= max(written["curves"][run][0]["train_loss"])
