"""Run artefacts: progress in terminals, notebooks and logs; torn metrics records."""

import errno
import io
import json
import logging
import sys

import pytest

from gnrev import train
from gnrev.train import metrics


def test_non_interactive_progress_logs_steps_per_second_and_the_latest_loss_every_interval(
    monkeypatch):
  monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, not a notebook
  now = [100.0]
  bar = metrics.progress_bar(10, 2, "adam", interval=5.0)
  assert isinstance(bar, metrics.LogProgress)
  bar = metrics.LogProgress(10, 2, "adam", interval=5.0, clock=lambda: now[0])
  logged = []  # absl's verbosity may have been lowered by an earlier test in this worker
  monkeypatch.setattr(metrics.logging, "info", lambda fmt, *args: logged.append(fmt % args))
  with bar:
    for _ in range(8):
      now[0] += 2.0             # a step every 2 s: lines after 3 steps (6 s) and 6, then the end
      bar.set_postfix(loss="0.5000")
      bar.update(1)
  lines = [line for line in logged if line.startswith("Run adam")]
  assert lines == ["Run adam: step 5/10 (50%), 0.5 steps/s, loss 0.5000",
                   "Run adam: step 8/10 (80%), 0.5 steps/s, loss 0.5000",
                   "Run adam: step 10/10 (100%), 0.5 steps/s, loss 0.5000"]


def test_terminals_get_a_tqdm_bar(monkeypatch):
  class Terminal(io.StringIO):
    def isatty(self):
      return True
  monkeypatch.setattr(sys, "stderr", Terminal())
  bar = metrics.progress_bar(10, 0, "sgd")
  assert type(bar).__module__.startswith("tqdm")
  bar.update(1)
  bar.close()
  assert "sgd" in sys.stderr.getvalue()


def test_a_torn_last_record_is_dropped_and_rewrites_are_atomic(tmp_path):
  path = tmp_path / "metrics.jsonl"
  records = [{"run": "a", "step": s} for s in range(3)]
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"run": "a", "st')
  assert metrics.read_metrics(str(path)) == records
  metrics.JsonlWriter(str(path)).truncate_after("a", 1)
  assert metrics.read_metrics(str(path)) == records[:2]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_corrupt_middle_record_fails_naming_the_file_and_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"run": "a", "step": 1}\n{"run": "a", "st\x00\n{"run": "a", "step": 3}\n')
  with pytest.raises(train.ConfigError, match=rf"{path} line 2 is not a JSON record .*"
                                              r"Delete or repair that line"):
    metrics.read_metrics(str(path))


def test_orbax_background_os_errors_are_left_to_the_main_threads_one_line():
  def record(pathname, error):
    try:
      raise error
    except Exception:  # pylint: disable=broad-except
      return logging.LogRecord("absl", logging.ERROR, pathname, 1, "Failed to run", (),
                               sys.exc_info())
  full = OSError(errno.ENOSPC, "No space left on device")
  assert metrics.orbax_os_error(record("/x/orbax/checkpoint/async_checkpointer.py", full))
  assert not metrics.orbax_os_error(record("/x/orbax/checkpoint/async_checkpointer.py",
                                           ValueError("a bug")))
  assert not metrics.orbax_os_error(record("/x/gnrev/train/loop.py", full))
