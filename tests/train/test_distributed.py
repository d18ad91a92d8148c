"""One run over 2 processes x 4 CPU devices trains as 1 process x 8 devices, and survives SIGKILL.

The two processes are the runbook's commands (docs/multiprocess.md): ``python -m gnrev.main``
with ``--coordinator_address=localhost:PORT --num_processes=2 --process_id=I``, each process
with 4 CPU devices, exchanging data through jax's CPU collectives (gloo, jax's default). They
train four optimizers of the default config (``:smoke,all,runs=adam+exact_gn+fishleg+sgd``:
the min-norm GN run only adds compile time); both are SIGKILLed in the middle of run ``fishleg``
and relaunched, and every run's final parameters must equal those of one process
with 8 devices (this pytest process, tests/conftest.py).

Every wait has a timeout, so a hung collective fails the test instead of blocking it.
"""

import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gnrev import train
from gnrev.train import distributed, sharding

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "default.py")
CONFIG_ARG = "smoke,all,runs=adam+exact_gn+fishleg+sgd"
# smoke: 4 steps per run; checkpoints 2 and 4. Exact GN on the thin-SVD path: the default Gram
# path is accurate to ~1e-3 in float32 near the truncation cut, more than the reduction order of
# 2 x 4 vs 8 devices may move it, so the comparison would test rounding, not the step.
OVERRIDES = ["--config.checkpoint_every=2", "--config.optimizers.exact_gn.solver=thin_svd"]
KILLED_RUN, KILL_AT_STEP, LAST_CHECKPOINT = "fishleg", 3, 2
TIMEOUT_S = 300  # for each launch of the two processes

# Both processes SIGKILL themselves at the same point of run "fishleg": after step 3, once
# checkpoint 2 is complete (waiting for it makes the resumed step deterministic).
KILLED_MAIN = f"""
import os, signal
from absl import app
from gnrev import main
from gnrev.train import checkpoint
save = checkpoint.save
def save_then_die(manager, step, state, **kwargs):
  save(manager, step, state, **kwargs)
  if os.sep + {KILLED_RUN!r} + os.sep in str(manager.directory) and step == {KILL_AT_STEP}:
    manager.wait_until_finished()
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
app.run(main.main)
"""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(command: list[str], workdir: str, cache_dir: str) -> list[subprocess.Popen]:
  """Starts the two processes of one run; their output goes to ``workdir.<process_id>.log``."""
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, "MPLBACKEND": "Agg",
         # The relaunch reuses the programs compiled before the kill.
         "JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  processes = []
  for i in range(2):
    with open(f"{workdir}.{i}.log", "w") as log:
      processes.append(subprocess.Popen(
          command + [f"--config={CONFIG}:{CONFIG_ARG}", f"--workdir={workdir}", *OVERRIDES,
                     f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}"],
          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return processes


def wait(processes: list[subprocess.Popen], workdir: str) -> tuple[list[int], list[str]]:
  """The exit codes and logs of both processes; kills both if either outlives the deadline."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in processes]
  except subprocess.TimeoutExpired:
    codes = None
  finally:
    for p in processes:
      p.kill()
      p.wait(timeout=30)
  logs = [open(f"{workdir}.{i}.log").read() for i in range(2)]
  assert codes is not None, f"Timed out after {TIMEOUT_S} s:\n" + "\n".join(
      f"--- process {i}:\n{log[-3000:]}" for i, log in enumerate(logs))
  return codes, logs


def test_two_processes_train_as_one_with_8_devices_and_resume_after_sigkill(tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py should give 8 CPU devices"
  workdir, cache = str(tmp_path / "two_processes"), str(tmp_path / "jax_cache")
  config = train.load_config(CONFIG, CONFIG_ARG)
  config.checkpoint_every = 2
  config.optimizers.exact_gn.solver = "thin_svd"
  reference = train.train_and_evaluate(config, str(tmp_path / "one_process"))
  codes, logs = wait(launch([sys.executable, "-c", KILLED_MAIN], workdir, cache), workdir)
  assert codes == [-9, -9], "\n".join(log[-3000:] for log in logs)
  for i, log in enumerate(logs):
    assert f"JAX process {i} of 2 on cpu; 4 local devices" in log and "mesh of 8 devices" in log
    assert f"Process {i} loads rows {16 * i}:{16 * i + 16} of every global batch of 32" in log
  assert max(train.checkpoint_steps(os.path.join(workdir, KILLED_RUN, "checkpoints"))) == (
      LAST_CHECKPOINT)
  assert max(r["step"] for r in train.read_metrics(workdir) if r["run"] == KILLED_RUN) == (
      KILL_AT_STEP)

  codes, logs = wait(launch([sys.executable, "-m", "gnrev.main"], workdir, cache), workdir)
  assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
  resumed = dict(re.findall(r"Run (\w+): steps (\d+)\.\.", logs[1]))
  assert resumed == {"adam": "4", "exact_gn": "4", KILLED_RUN: str(LAST_CHECKPOINT),
                     "sgd": "0"}, logs[1][-3000:]
  assert set(os.listdir(workdir)) >= {"config.json", "metrics.jsonl", "curves.png"}

  for run in config.optimizers:
    params = train.load_params(os.path.join(workdir, run, "checkpoints"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                                         err_msg=run),
                 params, jax.device_get(reference[run]["params"]))
  # Process 0 alone wrote the metrics: each record once, the killed run's steps 3..4 rewritten.
  records, expected = train.read_metrics(workdir), train.read_metrics(str(tmp_path / "one_process"))
  assert [(r["run"], r["step"], sorted(r)) for r in records] == [
      (r["run"], r["step"], sorted(r)) for r in expected]
  for record, reference_record in zip(records, expected):
    np.testing.assert_allclose([record[k] for k in sorted(record) if k != "run"],
                               [reference_record[k] for k in sorted(record) if k != "run"],
                               rtol=1e-4, atol=1e-6, err_msg=str(reference_record))


def test_shard_rows_builds_the_global_batch_from_this_process_rows():
  mesh = sharding.make_mesh(0)
  data = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
  rows = np.array([5, 39, 0, 7, 7, 12, 30, 1])
  (batch,) = sharding.shard_rows(mesh, rows, data)
  assert sharding.local_rows(mesh, len(rows)) == slice(0, 8)  # one process holds every row
  assert batch.shape == (8, 3) and len(batch.sharding.device_set) == 8
  np.testing.assert_array_equal(batch, data[rows])
  # Each device holds its own row, in mesh order.
  for shard in batch.addressable_shards:
    np.testing.assert_array_equal(shard.data, data[rows[shard.index[0]]])
  state = sharding.replicate(mesh, {"w": np.ones((2, 2), np.float32), "step": np.int32(3)})
  assert state["w"].sharding.is_fully_replicated and int(state["step"]) == 3


def test_distributed_flags_are_checked_before_jax_starts():
  assert not distributed.initialize()  # no flag: one process, nothing started
  with pytest.raises(ValueError, match=r"--process_id must be in \[0, --num_processes=2\); got 2"):
    distributed.initialize(coordinator_address="localhost:1", num_processes=2, process_id=2)
  with pytest.raises(ValueError, match="num_devices must be 0 .all. or a multiple"):
    sharding.make_mesh(9)
