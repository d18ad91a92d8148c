"""One launcher per workdir (the advisory lock, its message, a dead holder's lock released), and
launches that fail leave the workdir as they found it."""

import os
import signal
import subprocess
import sys

import ml_collections
import pytest

from gnrev import train
from gnrev.train import workdir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
# A process that takes the lock, says so, and holds it until killed.
HOLDER = """
import sys, time
from gnrev.train import workdir
with workdir.launcher_lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def test_a_second_lock_on_the_same_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir.launcher_lock(str(tmp_path)):
    with pytest.raises(workdir.WorkdirBusyError,
                       match=rf"Workdir {tmp_path} is in use by process {os.getpid()} on "):
      with workdir.launcher_lock(str(tmp_path)):
        pass
  with workdir.launcher_lock(str(tmp_path)):  # released on exit from the block
    pass
  assert (tmp_path / workdir.LOCK_FILE).read_text() == ""  # the holder's record emptied


def test_the_lock_of_a_killed_holder_is_released(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirBusyError, match=rf"in use by process {holder.pid} .*"
                                                       r"running `-c"):
      with workdir.launcher_lock(str(tmp_path)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir.launcher_lock(str(tmp_path)):
    pass


def test_a_second_launcher_is_refused_before_it_writes_anything(tmp_path):
  with workdir.launcher_lock(str(tmp_path)):
    before = sorted(os.listdir(tmp_path))
    launched = subprocess.run(
        [sys.executable, "-m", "gnrev.main",
         f"--config={os.path.join(REPO, 'configs', 'default.py')}:smoke",
         f"--workdir={tmp_path}"], cwd=REPO, env=ENV, capture_output=True, text=True,
        timeout=300)
    assert launched.returncode == 1, launched.stderr[-3000:]
    assert f"is in use by process {os.getpid()}" in launched.stderr
    assert "one launcher per workdir" in launched.stderr
    assert "Traceback" not in launched.stderr
    assert sorted(os.listdir(tmp_path)) == before == [workdir.LOCK_FILE]


def test_a_workdir_that_is_a_file_is_one_line_naming_it(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory")
  launched = subprocess.run(
      [sys.executable, "-m", "gnrev.main",
       f"--config={os.path.join(REPO, 'configs', 'default.py')}:smoke", f"--workdir={path}"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert launched.returncode == 1, launched.stderr[-3000:]
  assert f"gnrev.main: error: workdir '{path}' exists and is a file" in launched.stderr
  assert "Traceback" not in launched.stderr
  assert path.read_text() == "not a directory"


def _snapshot(directory):
  return {os.path.relpath(os.path.join(root, name), directory):
          open(os.path.join(root, name), "rb").read()
          for root, _, names in os.walk(directory) for name in names}


def test_a_refused_resume_leaves_the_workdir_byte_for_byte_unchanged(tmp_path):
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.optimizers = ml_collections.ConfigDict({"sgd": {"name": "sgd", "learning_rate": 0.1}})
  train.train_and_evaluate(config, str(tmp_path))
  before = _snapshot(tmp_path)
  assert before[workdir.LOCK_FILE] == b""
  config.seed += 1
  with pytest.raises(ValueError, match="Differing: seed"):
    train.train_and_evaluate(config, str(tmp_path))
  assert _snapshot(tmp_path) == before


def test_a_launch_that_fails_to_build_its_first_run_writes_no_config(tmp_path):
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.optimizers = ml_collections.ConfigDict({"sgd": {"name": "sgd", "learning_rate": 0.1}})
  config.seed = 2**64  # no PRNG key holds it
  with pytest.raises((OverflowError, ValueError)):
    train.train_and_evaluate(config, str(tmp_path))
  assert _snapshot(tmp_path) == {workdir.LOCK_FILE: b""}
  config.seed = 0  # the corrected command is not refused
  assert train.train_and_evaluate(config, str(tmp_path))["sgd"]["step"] > 0
