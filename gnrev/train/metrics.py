"""Run artefacts: JSON-lines metrics, progress (a bar, or log lines in non-interactive runs), PNG
plots of the curves, and the binary precision / recall / F1 of two-class runs."""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from gnrev.train.configs import ConfigError

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

  Raises:
    ConfigError: naming the file and the line, for any other line that is not a JSON record.
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
  records = []
  for number, line in enumerate(lines[:-1], start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as e:
      raise ConfigError(
          f"{path} line {number} is not a JSON record ({e}): the workdir's metrics are corrupt. "
          f"Delete or repair that line (checkpoints are kept apart), or use a new --workdir."
      ) from None
  return records


def quiet_library_logs() -> None:
  """Keeps the console to gnrev's own progress: orbax's log lines (one per checkpoint step, at
  INFO) and JAX's INFO notes on accelerator plugins it did not find (e.g. the TPU's on a CPU or
  GPU machine) are dropped; warnings and errors still show, but for :func:`orbax_os_error`."""
  logging.get_absl_handler().addFilter(
      lambda record: "orbax" not in record.pathname or (
          record.levelno >= std_logging.WARNING and not orbax_os_error(record)))
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def orbax_os_error(record: std_logging.LogRecord) -> bool:
  """Whether ``record`` is orbax's background save thread logging an ``OSError`` (a full disk, a
  read-only workdir) with its traceback. orbax keeps the error and raises it again in the main
  thread at the next save or wait, where the launcher reports it as one line: the thread's own
  traceback would only precede that line."""
  return "orbax" in record.pathname and bool(record.exc_info) and isinstance(
      record.exc_info[1], OSError)


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


def _curve(records: list[dict], run: str, key: str) -> tuple[list, list]:
  """``(steps, values)`` of metric ``key`` of ``run``; a record that also holds ``pruned_<key>``
  (a pruning step) adds that value at the same step, so the drop at pruning is drawn."""
  points = []
  for r in records:
    if r["run"] == run and key in r:
      points.append((r["step"], r[key]))
    if r["run"] == run and f"pruned_{key}" in r:
      points.append((r["step"], r[f"pruned_{key}"]))
  return [p[0] for p in points], [p[1] for p in points]


def plot_curves(records: Iterable[dict], panels=PANELS, title: str = "") -> Figure:
  """One panel per metric of ``panels`` (a task's; default :data:`PANELS`) that the records
  hold, one curve per run, the legend outside the panels and ``title`` above them.

  Runs that prune show their scores right after each pruning step, before fine-tuning (the
  ``pruned_*`` records), as a point of the curve marked with an ``x``.
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  records = list(records)
  runs = list(dict.fromkeys(r["run"] for r in records))
  panels = [p for p in panels if any(p[0] in r for r in records)] or tuple(panels)[:1]
  figure = Figure(figsize=(4 * len(panels) + 2, 3.6), layout="constrained")
  for axis, (key, label, scale) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
    for run in runs:
      steps, values = _curve(records, run, key)
      if steps:
        (line,) = axis.plot(steps, values, label=run)
        pruned = [(r["step"], r[f"pruned_{key}"]) for r in records
                  if r["run"] == run and f"pruned_{key}" in r]
        if pruned:
          axis.plot(*zip(*pruned), "x", color=line.get_color())
    axis.set(title=label, xlabel="step", ylabel=key, yscale=scale)
  if any(k.startswith("pruned_") for r in records for k in r):
    figure.axes[0].plot([], [], "x", color="gray", label="pruned, before fine-tuning")
  handles, labels = figure.axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside right upper", fontsize="small")
  if title:
    figure.suptitle(title)
  return figure


def save_plots(workdir: str, panels=PANELS, title: str = "") -> str:
  """Writes ``workdir/curves.png`` from ``workdir/metrics.jsonl`` and returns its path."""
  path = os.path.join(workdir, "curves.png")
  plot_curves(read_metrics(workdir), panels, title).savefig(path, dpi=100)
  return path


def final_table(results: dict[str, dict]) -> list[str]:
  """Lines of a table of each run's final metrics (one line per run, columns aligned).

  Per-inner-step details (``*_step_<k>``, e.g. meta-learning's query loss after each step) stay
  in ``metrics.jsonl``; the table keeps the summary columns.

  Example:
    >>> for line in final_table({"adam": {"params": 0, "step": 4, "test_loss": 2.4943}}):
    ...   print(line)
    run   step  test_loss
    adam     4      2.494
  """
  columns = list(dict.fromkeys(k for m in results.values() for k in m
                               if k != "params" and "_step_" not in k))
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))
  rows = [["run", *columns]] + [[run, *(cell(m.get(k)) for k in columns)]
                                for run, m in results.items()]
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                    enumerate(zip(row, widths))).rstrip() for row in rows]
