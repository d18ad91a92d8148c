"""The experiment scripts run end to end at smoke size and write their JSON and figures."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args, timeout=900):
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.parametrize("config", ["treemaml_linear.py", "treemaml_sinusoid.py"])
def test_treemaml_synthetic_smoke_reports_every_method(tmp_path, config):
  _run("treemaml_synthetic.py", f"--config=configs/{config}", f"--workdir={tmp_path}",
       "--config.meta_steps=3", "--config.num_test_batches=4", "--config.eval_chunk=2",
       "--config.seeds=0")
  [json_file] = list(tmp_path.glob("treemaml_*.json"))
  results = json.loads(json_file.read_text())
  text = json.dumps(results)
  for method in ("no_adaptation", "maml", "shared_first_step", "treemaml_true", "treemaml_learned"):
    assert method in text
  runs = results["query_mse_per_inner_step"]
  assert runs["treemaml_true"]["ari_vs_true_tree_per_step"] == [1.0, 1.0, 1.0]
  assert list(tmp_path.glob("treemaml_*.png"))
