"""One launcher per workdir: the advisory lock, its message, and a dead holder's lock released."""

import os
import signal
import subprocess
import sys

import pytest

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
  assert f"gnrev.main: error: File exists: '{path}'" in launched.stderr
  assert "Traceback" not in launched.stderr
  assert path.read_text() == "not a directory"
