"""Run artefacts: JSON-lines metrics, progress (a bar, or log lines in non-interactive runs), PNG
plots of the curves, and the binary precision / recall / F1 of two-class runs."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

if TYPE_CHECKING:  # matplotlib loads in plot_curves only: importing gnrev.train stays fast
  from matplotlib.figure import Figure


class JsonlWriter:
  """Appends one JSON object per record to ``path``, flushed at once (survives a kill).

  ``truncate_after(run, step)`` drops records of ``run`` past ``step``, so that a resumed run does
  not repeat the ones written between its last checkpoint and the interruption. It rewrites the
  file atomically (:func:`write_atomically`): a kill during the rewrite leaves the old file.
  """

  def __init__(self, path: str):
    self.path = path

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def truncate_after(self, run: str, step: int) -> None:
    kept = [r for r in read_metrics(self.path) if not (r["run"] == run and r["step"] > step)]
    write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def write_atomically(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file and ``os.replace``.

  A reader, or a kill at any moment, sees the old file or the new one, never a part of either.
  """
  temporary = f"{path}.tmp"  # one writer (process 0); a killed one's is overwritten next time
  with open(temporary, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` file (or of ``workdir/metrics.jsonl`` given a dir).

  A last line without its newline is a record whose write was interrupted by a kill; it is
  dropped with a warning (a resumed run writes it again).
  """
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")
  if lines[-1].strip():
    logging.warning("%s: dropping an incomplete last record (its write was interrupted): %r",
                    path, lines[-1][:80])
  return [json.loads(line) for line in lines[:-1] if line.strip()]


# Non-interactive runs (logs, batch jobs, CI) get a progress line this often.
PROGRESS_LOG_SECONDS = 30.0


def _in_notebook() -> bool:
  ipython = sys.modules.get("IPython")
  shell = ipython.get_ipython() if ipython is not None else None
  return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class LogProgress:
  """Progress of a non-interactive run: a log line every ``interval`` seconds, and at the end.

  The line gives the step, the steps per second since the previous line and the latest values
  passed to :meth:`set_postfix` (the training loss). Same interface as the parts of ``tqdm``
  that the training loop uses (``update``, ``set_postfix``, ``close``, context manager).
  """

  def __init__(self, total: int, initial: int, run: str, interval: float = PROGRESS_LOG_SECONDS,
               clock: Callable[[], float] = time.monotonic):
    self.total, self.n, self.run, self.interval, self._clock = total, initial, run, interval, clock
    self._last_time, self._last_n, self._postfix = clock(), initial, {}

  def set_postfix(self, ordered_dict: dict | None = None, **values) -> None:
    self._postfix = {**(ordered_dict or {}), **values}

  def update(self, n: int = 1) -> None:
    self.n += n
    now = self._clock()
    if now - self._last_time >= self.interval or self.n >= self.total:
      rate = (self.n - self._last_n) / max(now - self._last_time, 1e-9)
      values = "".join(f", {k} {v}" for k, v in self._postfix.items())
      logging.info("Run %s: step %d/%d (%.0f%%), %.3g steps/s%s", self.run, self.n, self.total,
                   100.0 * self.n / max(self.total, 1), rate, values)
      self._last_time, self._last_n = now, self.n

  def close(self) -> None:
    pass

  def __enter__(self) -> "LogProgress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def progress_bar(total: int, initial: int, run: str,
                 interval: float = PROGRESS_LOG_SECONDS) -> Any:
  """Progress of a run of ``total`` steps, from step ``initial``, labelled ``run``.

  A ``tqdm.auto`` bar (with steps/s and the postfix values) in a terminal or a notebook; a
  :class:`LogProgress` line every ``interval`` seconds otherwise (logs, batch jobs, CI).
  """
  if jax.process_index() != 0 or sys.stderr.isatty() or _in_notebook():
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel  (notebook detection)
    # Only process 0 of a multi-process run shows progress.
    return tqdm(total=total, initial=initial, desc=run, unit="step", dynamic_ncols=True,
                disable=jax.process_index() != 0)
  return LogProgress(total, initial, run, interval)


def binary_counts(predicted: jax.Array, actual: jax.Array, mask: jax.Array) -> dict:
  """Masked counts of class 1 (positive): true, predicted and actual positives.

  Args:
    predicted, actual: ``(n,)`` int class labels.
    mask: ``(n,)`` weights, 1 for real and 0 for padding rows.

  Returns:
    ``{"true_positives", "predicted_positives", "actual_positives"}`` scalars (jittable).
  """
  predicted, actual = (predicted == 1) * mask, (actual == 1) * mask
  return {"true_positives": jnp.sum(predicted * actual),
          "predicted_positives": jnp.sum(predicted), "actual_positives": jnp.sum(actual)}


def binary_scores(counts: dict) -> dict[str, float]:
  """``{"precision", "recall", "f1"}`` from :func:`binary_counts` summed over a split.

  ``TP / predicted``, ``TP / actual`` and ``2 TP / (predicted + actual)``; 0 where the
  denominator is 0, as :mod:`gnrev.graphs.metrics` and scikit-learn's ``zero_division=0``.
  """
  ratio = lambda num, den: float(num) / float(den) if den > 0 else 0.0
  tp, predicted, actual = (counts[k] for k in ("true_positives", "predicted_positives",
                                               "actual_positives"))
  return {"precision": ratio(tp, predicted), "recall": ratio(tp, actual),
          "f1": ratio(2 * tp, predicted + actual)}


PANELS = (("train_loss", "train loss (pre-step batch)", "log"),
          ("test_loss", "test loss", "log"),
          ("test_accuracy", "test accuracy", "linear"),
          ("loss_change_pct", "% loss change on the same batch", "linear"),
          ("test_precision", "test precision (class 1)", "linear"),
          ("test_recall", "test recall (class 1)", "linear"),
          ("test_f1", "test F1 (class 1)", "linear"))


def plot_curves(records: Iterable[dict], panels=PANELS) -> Figure:
  """One panel per metric of ``panels`` (a task's; default :data:`PANELS`) that the records
  hold, one curve per run."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  records = list(records)
  runs = list(dict.fromkeys(r["run"] for r in records))
  panels = [p for p in panels if any(p[0] in r for r in records)] or tuple(panels)[:1]
  figure = Figure(figsize=(4 * len(panels), 3.4), layout="constrained")
  for axis, (key, title, scale) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
    for run in runs:
      points = [(r["step"], r[key]) for r in records if r["run"] == run and key in r]
      if points:
        steps, values = np.array(points).T
        axis.plot(steps, values, label=run)
    axis.set(title=title, xlabel="step", yscale=scale)
  figure.axes[0].legend()
  return figure


def save_plots(workdir: str, panels=PANELS) -> str:
  """Writes ``workdir/curves.png`` from ``workdir/metrics.jsonl`` and returns its path."""
  path = os.path.join(workdir, "curves.png")
  plot_curves(read_metrics(workdir), panels).savefig(path, dpi=100)
  return path
