"""The real entry point, ``python -m gnrev.main``: smoke runs, override errors, kill-and-resume.

Launcher configs are the files in configs/ with ``LAUNCHER = True`` at module level (other
configs/ files belong to experiment scripts and are not run here).
"""

import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from gnrev import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_CONFIGS = sorted(
    path for path in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if "\nLAUNCHER = True" in open(path).read())
# Same devices as this process (tests/conftest.py), so subprocess and in-process runs match.
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
       "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, "MPLBACKEND": "Agg"}
MAIN = [sys.executable, "-m", "gnrev.main"]


def test_every_launcher_config_runs_end_to_end_and_writes_its_artefacts(tmp_path):
  assert LAUNCHER_CONFIGS, "configs/ should hold launcher configs"
  runs = {os.path.basename(path): subprocess.Popen(
      MAIN + [f"--config={path}:smoke", f"--workdir={tmp_path / os.path.basename(path)}"],
      cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for path in LAUNCHER_CONFIGS}
  for name, process in runs.items():
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, f"{name} failed:\n{output[-3000:]}"
    workdir = tmp_path / name
    assert {"config.json", "metrics.jsonl", "curves.png"} <= set(os.listdir(workdir))
    config = train.load_config(os.path.join(REPO, "configs", name), "smoke")
    records = train.read_metrics(str(workdir))
    assert {r["run"] for r in records} == set(config.optimizers)
    assert all("test_loss" in r for r in records if r["step"] == records[-1]["step"])


def parse_config_flags(argv):
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_config_override_typo_fails_with_ml_collections_suggestion():
  path = os.path.join(REPO, "configs", "default.py")
  with pytest.raises(AttributeError, match='Did you mean "num_epochs" instead of "num_epoch"'):
    parse_config_flags(["main", f"--config={path}:smoke", "--config.num_epoch=3"])
  config = parse_config_flags(
      ["main", f"--config={path}:smoke", "--config.optimizers.adam.learning_rate=0.5"])
  assert config.optimizers.adam.learning_rate == 0.5 and config.data.train_subset == 128


KILL_AT_STEP = 11
# Runs gnrev.main, but SIGKILLs itself right after writing the metrics of step 11 of run "sgd",
# so that the kill lands at the same point every time, between checkpoints (every 5 steps).
KILLED_MAIN = f"""
import os, signal, sys
from absl import app
from gnrev import main
from gnrev.train import metrics
write = metrics.JsonlWriter.write
def write_then_die(self, record):
  write(self, record)
  if record["run"] == "sgd" and record["step"] == {KILL_AT_STEP}:
    os.kill(os.getpid(), signal.SIGKILL)
metrics.JsonlWriter.write = write_then_die
app.run(main.main)
"""


def test_run_killed_mid_training_resumes_to_the_same_params_as_an_uninterrupted_run(tmp_path):
  path = os.path.join(REPO, "configs", "default.py")
  overrides = ["--config.num_epochs=4", "--config.checkpoint_every=5",
               "--config.optimizers.adam.learning_rate=0.01"]
  args = [f"--config={path}:smoke", f"--workdir={tmp_path / 'killed'}", *overrides]
  killed = subprocess.run([sys.executable, "-c", KILLED_MAIN, *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9, killed.stderr[-3000:]
  sgd_checkpoints = os.listdir(tmp_path / "killed" / "sgd" / "checkpoints")
  latest = max(int(s) for s in sgd_checkpoints if s.isdigit())
  assert 0 < latest < KILL_AT_STEP
  resumed = subprocess.run(MAIN + args, cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  total = 4 * 4  # 4 epochs of 128 examples in batches of 32
  assert f"Run adam: steps {total}..{total}" in resumed.stderr  # finished: nothing to redo
  assert f"Run sgd: steps {latest}..{total}" in resumed.stderr  # resumed, not restarted

  config = train.load_config(path, "smoke")
  config.num_epochs, config.checkpoint_every = 4, 5
  config.optimizers.adam.learning_rate = 0.01
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
  for run in config.optimizers:
    restored = train.load_params(str(tmp_path / "killed" / run / "checkpoints"))
    jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(reference[run]["params"]))
  assert (train.read_metrics(str(tmp_path / "killed")) ==
          train.read_metrics(str(tmp_path / "reference")))
