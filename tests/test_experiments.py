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


