"""Kill-and-resume: a launcher run SIGKILLed at random moments ends as an uninterrupted run.

The launcher (``python -m gnrev.main``) runs in a subprocess that SIGKILLs itself at a moment
drawn by a seeded generator: right after a metrics record (before the first checkpoint of the
first run), while an asynchronous checkpoint write is in flight, and between writing and renaming
the rewritten metrics.jsonl. Each relaunch resumes the same workdir; the last one finishes. Its
final parameters must be bit-identical to an uninterrupted run's and metrics.jsonl identical
record for record. Also: a corrupt latest checkpoint (a flipped byte, a truncated file) falls
back to the previous intact one.
"""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from gnrev import train
from tests.train.test_checkpoint import flip_byte

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "default.py")
# Two runs (exact GN, whose state holds diagnostics, and SGD), 2 epochs of 4 steps, checkpoints
# at steps 1, 3, 6 and 8.
RUNS = {"exact_gn": {"name": "exact_gn", "learning_rate": 0.1, "solver": "svd", "rtol": 1e-2,
                     "atol": 1e-5},
        "sgd": {"name": "sgd", "learning_rate": 0.1}}
OVERRIDES = ["--config.num_epochs=2", "--config.checkpoint_every=3", f"--config.optimizers={RUNS}"]
STEPS, EVERY = 8, 3
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
       "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, "MPLBACKEND": "Agg",
       # Relaunches reuse the first launch's compiled steps (compilation is most of their time).
       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
# Fields that measure time, not training (none today; the comparison ignores them if added).
TIMING_FIELDS = ("time", "wall_time", "seconds", "steps_per_second")

# gnrev.main, signalling itself at the moment GNREV_TEST_KILL names ("<event>:<n>", or
# "<event>:<n>:<signal>[:<times>]"; SIGKILL once by default): right after the n-th metrics
# record, right after the n-th checkpoint save was started (its asynchronous write in flight), or
# in the n-th atomic rewrite after the temporary file is written.
KILLING_MAIN = """
import os, signal
from absl import app
import orbax.checkpoint as ocp
from gnrev import main
from gnrev.train import metrics
event, n, *rest = os.environ["GNREV_TEST_KILL"].split(":")
name, times = rest + ["SIGKILL", "1"][len(rest):]
count = {"record": 0, "save": 0, "rewrite": 0}
def tick(kind):
  count[kind] += 1
  if kind == event and count[kind] == int(n):
    for _ in range(int(times)):
      os.kill(os.getpid(), signal.Signals[name])
write, save = metrics.JsonlWriter.write, ocp.CheckpointManager.save
rewrite = metrics.write_atomically
def write_then_tick(self, record):
  write(self, record)
  tick("record")
def save_then_tick(self, *args, **kwargs):
  started = save(self, *args, **kwargs)
  if started:
    tick("save")
  return started
def rewrite_with_tick(path, text):
  with open(f"{path}.tmp", "w") as f:
    f.write(text)
  tick("rewrite")
  rewrite(path, text)
metrics.JsonlWriter.write = write_then_tick
ocp.CheckpointManager.save = save_then_tick
metrics.write_atomically = rewrite_with_tick
app.run(main.main, flags_parser=main.parse_flags)
"""


def launch(workdir, kill=None):
  cache = os.path.join(os.path.dirname(workdir), "jax_cache")
  env = {**ENV, "GNREV_TEST_KILL": kill or "none:0", "JAX_COMPILATION_CACHE_DIR": cache}
  command = [sys.executable, "-c", KILLING_MAIN, f"--config={CONFIG}:smoke",
             f"--workdir={workdir}", *OVERRIDES]
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def test_launcher_killed_at_random_moments_resumes_to_the_uninterrupted_params_and_metrics(
    tmp_path):
  rng = np.random.default_rng(12)
  records_per_run = STEPS + 1  # step 0's evaluation, then every step (log_every = 1)
  kills = [
      # Before the first run's first checkpoint (orbax saves step 1, then 3, 6, 8): after its
      # step-0 or step-1 record.
      f"record:{rng.integers(1, 3)}",
      # During one of the checkpoint writes of the resumed runs (4 per run).
      f"save:{rng.integers(1, 4 * len(RUNS) + 1)}",
      # While config.json or a run's metrics records are rewritten on resume.
      f"rewrite:{rng.integers(1, len(RUNS) + 2)}",
  ]
  workdir = tmp_path / "killed"
  for kill in kills:
    killed = launch(workdir, kill)
    assert killed.returncode == -9, f"{kill}: {killed.stderr[-3000:]}"
    if kill.startswith("save"):  # the kill landed inside a write: a save left uncommitted
      leftovers = [name for run in RUNS
                   if (workdir / run / "checkpoints").is_dir()
                   for name in os.listdir(workdir / run / "checkpoints") if "tmp" in name]
      assert leftovers, f"{kill}: no checkpoint write was in flight"
  assert len(train.read_metrics(str(workdir))) < len(RUNS) * records_per_run
  finished = launch(workdir)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert not [name for name in os.listdir(workdir) if name.endswith(".tmp")]

  config = train.load_config(CONFIG, "smoke")
  config.num_epochs, config.checkpoint_every = 2, EVERY
  config.optimizers = ml_collections.ConfigDict(RUNS)
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
  for run in config.optimizers:
    directory = str(workdir / run / "checkpoints")
    assert max(train.checkpoint_steps(directory)) == STEPS
    jax.tree.map(np.testing.assert_array_equal, train.load_params(directory),
                 jax.device_get(reference[run]["params"]))
  killed_records = without_timing(train.read_metrics(str(workdir)))
  assert killed_records == without_timing(train.read_metrics(str(tmp_path / "reference")))
  assert len(killed_records) == len(RUNS) * records_per_run  # no duplicate, none missing


def corrupt(step_dir, how):
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      if how == "empty _METADATA" and name == "_METADATA":
        open(path, "w").close()
      if how == "truncated data" and os.path.basename(root) == "d":  # the array store's chunks
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
      if how == "flipped byte" and os.path.basename(root) == "d":  # what orbax alone misses
        flip_byte(path, os.path.getsize(path) // 2)


def test_corrupt_latest_checkpoints_fall_back_to_the_newest_intact_one(tmp_path, caplog):
  config = train.load_config(CONFIG, "smoke")
  config.optimizers = ml_collections.ConfigDict({"sgd": {"name": "sgd", "learning_rate": 0.1}})
  config.num_epochs, config.checkpoint_every, config.max_to_keep = 2, 4, None
  final = jax.device_get(train.train_and_evaluate(config, str(tmp_path))["sgd"]["params"])
  directory = tmp_path / "sgd" / "checkpoints"
  assert train.checkpoint_steps(str(directory)) == [1, 4, 8]
  records = train.read_metrics(str(tmp_path))
  corrupt(str(directory / "8"), "flipped byte")
  corrupt(str(directory / "4"), "truncated data")
  with caplog.at_level("WARNING"):
    resumed = train.train_and_evaluate(config, str(tmp_path))["sgd"]
  for step in (8, 4):
    assert f"Checkpoint step {step} in {directory} is unreadable" in caplog.text
  assert caplog.text.count("resuming from step 1 instead") == 2
  assert resumed["step"] == 8 and train.checkpoint_steps(str(directory)) == [1, 4, 8]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["params"]), final)
  assert train.read_metrics(str(tmp_path)) == records


def test_no_intact_checkpoint_is_an_error_naming_the_directory(tmp_path):
  config = train.load_config(CONFIG, "smoke")
  config.optimizers = ml_collections.ConfigDict({"sgd": {"name": "sgd", "learning_rate": 0.1}})
  train.train_and_evaluate(config, str(tmp_path))
  directory = tmp_path / "sgd" / "checkpoints"
  for step in train.checkpoint_steps(str(directory)):
    corrupt(str(directory / str(step)), "empty _METADATA")
  with pytest.raises(ValueError, match=rf"No checkpoint in {directory} can be restored .*Delete "
                                       r"the directory"):
    train.train_and_evaluate(config, str(tmp_path))


def test_sigterm_saves_exits_143_and_the_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
  workdir = tmp_path / "stopped"
  # Record 5 is exact_gn's step 4, between its checkpoints at steps 3 and 6.
  stopped = launch(workdir, "record:5:SIGTERM")
  assert stopped.returncode == 143, stopped.stderr[-3000:]
  assert "run 'exact_gn' stopped at step 4; re-run the same command to resume" in stopped.stderr
  assert "Traceback" not in stopped.stderr
  assert train.checkpoint_steps(str(workdir / "exact_gn" / "checkpoints"))[-1] == 4
  assert not (workdir / "sgd").exists()
  assert [r["step"] for r in train.read_metrics(str(workdir))] == list(range(5))
  assert launch(workdir).returncode == 0

  config = train.load_config(CONFIG, "smoke")
  config.num_epochs, config.checkpoint_every = 2, EVERY
  config.optimizers = ml_collections.ConfigDict(RUNS)
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
  for run in config.optimizers:
    jax.tree.map(np.testing.assert_array_equal,
                 train.load_params(str(workdir / run / "checkpoints")),
                 jax.device_get(reference[run]["params"]))
  assert (without_timing(train.read_metrics(str(workdir)))
          == without_timing(train.read_metrics(str(tmp_path / "reference"))))


def test_a_second_ctrl_c_exits_130_at_once_without_a_traceback(tmp_path):
  interrupted = launch(tmp_path / "interrupted", "record:2:SIGINT:2")
  assert interrupted.returncode == 130, interrupted.stderr[-3000:]
  assert "second SIGINT: exiting now, without saving" in interrupted.stderr
  assert "stopped at step" not in interrupted.stderr
  assert "Traceback" not in interrupted.stderr and "KeyboardInterrupt" not in interrupted.stderr
