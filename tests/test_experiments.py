"""The experiment scripts run end to end at smoke size and write their JSON and figures."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args, timeout=900):
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_fishleg_autoencoder_smoke_writes_curves_for_every_optimizer(tmp_path):
  _run("fishleg_autoencoder.py", "--config=configs/fishleg_autoencoder.py",
       f"--workdir={tmp_path}", "--config.num_steps=20", "--config.eval_every=10",
       "--config.seeds=0,")
  results = json.loads((tmp_path / "out" / "fishleg_autoencoder.json").read_text())
  assert (tmp_path / "out" / "fishleg_autoencoder.png").stat().st_size > 0
  text = json.dumps(results)
  for optimizer in ("fishleg", "adam", "sgd"):
    assert optimizer in text
