"""Keeping a workdir whole: one launcher at a time (a ``flock`` the kernel drops when its holder
dies), and a clean stop on SIGTERM / SIGINT (finish the step, save, raise :class:`Stopped`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import time
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

LOCK_FILE = "launcher.lock"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WorkdirBusyError(OSError):
  """Another process holds the workdir's launcher lock (an OSError, like a busy resource)."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      holder = json.loads(f.read() or "{}")
  except (OSError, ValueError):
    holder = {}
  if not holder.get("pid"):
    return "another process (it is starting and has not recorded its pid yet)"
  words = f"process {holder['pid']} on {holder.get('host', '?')}"
  words += f", started {holder['started']}" if holder.get("started") else ""
  words += f", running `{holder['command']}`" if holder.get("command") else ""
  if holder.get("host") == socket.gethostname() and not _alive(int(holder["pid"])):
    words += " (no longer running: a process it started still holds the lock)"
  return words


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, under another user
    pass
  return True


@contextlib.contextmanager
def launcher_lock(workdir: str) -> Iterator[None]:
  """Holds ``workdir``'s launcher lock (created if needed) for the ``with`` block.

  Raises:
    WorkdirBusyError: if another process holds the lock; the message names that process.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirBusyError(
          f"Workdir {workdir} is in use by {_holder(path)}; one launcher per workdir: wait for "
          "it to finish or stop it (it saves and exits on SIGTERM), then re-run.") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
  finally:
    os.close(fd)  # releases the flock


class Stopped(Exception):
  """Training stopped on a signal after saving; ``exit_code`` is ``128 + signal``."""

  def __init__(self, run: str, step: int, signum: int):
    super().__init__(f"{signal.Signals(signum).name}: run {run!r} stopped at step {step}; re-run "
                     "the same command to resume")
    self.run, self.step, self.signum, self.exit_code = run, step, signum, 128 + signum


_requested: list[int] = []  # the signal received, if any
_sync_points = [0]  # preemption sync point ids of a multi-process run


def stop_requested() -> int | None:
  """The signal that asked training to stop (SIGTERM or SIGINT), or None.

  With several processes, every process must call it once per step: they then all stop at the
  same call (SIGTERM via ``jax.distributed``'s preemption sync point, SIGINT via an all-gather).
  """
  signum = _requested[0] if _requested else 0
  if jax.process_count() > 1:
    _sync_points[0] += 1
    if multihost_utils.reached_preemption_sync_point(_sync_points[0]):
      signum = signum or signal.SIGTERM
    signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
    if signum and not _requested:
      _requested.append(signum)
  return signum or None


def raise_if_stopped(run: str, step: int) -> None:
  """Raises :class:`Stopped` if a stop was requested; call it after saving, on every process."""
  signum = stop_requested()
  if signum is not None:
    raise Stopped(run, step, signum)


def _on_signal(signum, frame) -> None:
  del frame
  if _requested:
    print(f"gnrev: second {signal.Signals(signum).name}: exiting now, without saving.",
          file=sys.stderr, flush=True)
    os._exit(128 + signum)
  _requested.append(signum)
  print(f"gnrev: {signal.Signals(signum).name} received: finishing the current step and "
        "saving (send it again to exit at once).", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
  """Inside the block, a first SIGTERM / SIGINT requests a clean stop and a second exits at once.

  Restores the previous handlers on exit. Call from the main thread.
  """
  previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    _requested.clear()
