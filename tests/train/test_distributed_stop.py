"""SIGTERM to one process of a 2-process run stops both at the same step, saved, exit 143.

A scheduler signals every process, but each sees its signal at its own moment; the processes
must agree on the step to stop at, or one waits forever in a collective the other left. Here only
process 1 is signalled (the worst case), right after its step-1 checkpoint save of the first
run; both must then save one same later step and exit 143 with the resume message.
"""

import os
import re
import sys

from gnrev import train
from tests.train.test_distributed import launch, wait

SIGNALLED_MAIN = """
import os, signal
import jax
from absl import app
from gnrev import main
from gnrev.train import checkpoint
save = checkpoint.save
def save_then_signal(manager, step, state, **kwargs):
  save(manager, step, state, **kwargs)
  if jax.process_index() == 1 and step == 1 and os.sep + "adam" + os.sep in str(manager.directory):
    os.kill(os.getpid(), signal.SIGTERM)
checkpoint.save = save_then_signal
app.run(main.main)
"""


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(tmp_path):
  workdir = str(tmp_path / "workdir")
  codes, logs = wait(launch([sys.executable, "-c", SIGNALLED_MAIN], workdir,
                            str(tmp_path / "cache")), workdir)
  assert codes == [143, 143], "\n".join(log[-3000:] for log in logs)
  # The stop notice reaches the processes through JAX's coordination service at a moment of
  # its own: on a loaded machine it may arrive after the first run has finished. Whatever run
  # and step it lands on, both processes must name the same ones, with that step saved.
  stops = [re.findall(r"run '(\w+)' stopped at step (\d+); re-run the same command to resume",
                      log) for log in logs]
  assert stops[0] == stops[1] and len(stops[0]) == 1, "\n".join(log[-3000:] for log in logs)
  assert all("Traceback" not in log for log in logs)
  run, step = stops[0][0][0], int(stops[0][0][1])
  runs = ["adam", "exact_gn", "sgd"]   # configs/default.py's runs, in launch order
  assert run in runs and (run != "adam" or step > 1), stops
  assert max(train.checkpoint_steps(os.path.join(workdir, run, "checkpoints"))) == step
  for later in runs[runs.index(run) + 1:]:
    assert not os.path.exists(os.path.join(workdir, later))
