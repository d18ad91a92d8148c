"""Run artefacts: JSON-lines metrics, progress (a bar or log lines), PNG curves, and binary
precision / recall / F1."""

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
  """Appends one JSON record per line to ``path``, flushed at once (survives a kill)."""

  def __init__(self, path: str):
    self.path = path

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def truncate_after(self, run: str, step: int) -> None:
    """Atomically drops ``run``'s records past ``step`` (those a resumed run writes again)."""
    kept = [r for r in read_metrics(self.path) if not (r["run"] == run and r["step"] > step)]
    write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def write_atomically(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically: readers, or a kill, see the old or the new file."""
  temporary = f"{path}.tmp"  # one writer; a killed one's is overwritten next time
  with open(temporary, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def read_metrics(path: str) -> list[dict]:
  """The records of ``path`` (a ``metrics.jsonl`` or its directory); [] if there is no file.

  An unterminated last line (a write cut by a kill) is dropped with a warning.

  Raises:
    ConfigError: naming the file and line of any other line that is not JSON.
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
  """Drops orbax's INFO lines, JAX's INFO notes on missing plugins and :func:`orbax_os_error`."""
  logging.get_absl_handler().addFilter(
      lambda record: "orbax" not in record.pathname or (
          record.levelno >= std_logging.WARNING and not orbax_os_error(record)))
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def orbax_os_error(record: std_logging.LogRecord) -> bool:
  """Whether ``record`` is orbax's save thread logging an ``OSError`` (re-raised in main thread)."""
  return "orbax" in record.pathname and bool(record.exc_info) and isinstance(
      record.exc_info[1], OSError)


# Non-interactive runs (logs, batch jobs, CI) get a progress line this often.
PROGRESS_LOG_SECONDS = 30.0


def _in_notebook() -> bool:
  ipython = sys.modules.get("IPython")
  shell = ipython.get_ipython() if ipython is not None else None
  return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class LogProgress:
  """Progress as a log line every ``interval`` seconds and at the end; the subset of ``tqdm``
  that the training loop uses."""

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
  """A ``tqdm`` bar in a terminal or notebook, else a :class:`LogProgress`; on process 0 only."""
  if jax.process_index() != 0 or sys.stderr.isatty() or _in_notebook():
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel  (notebook detection)
    return tqdm(total=total, initial=initial, desc=run, unit="step", dynamic_ncols=True,
                disable=jax.process_index() != 0)
  return LogProgress(total, initial, run, interval)


def binary_counts(predicted: jax.Array, actual: jax.Array, mask: jax.Array) -> dict:
  """Masked counts of class 1: ``true_positives``, ``predicted_positives``, ``actual_positives``.

  ``predicted`` and ``actual`` are ``(n,)`` int labels; ``mask`` is 1 for real rows, 0 for padding.
  """
  predicted, actual = (predicted == 1) * mask, (actual == 1) * mask
  return {"true_positives": jnp.sum(predicted * actual),
          "predicted_positives": jnp.sum(predicted), "actual_positives": jnp.sum(actual)}


def binary_scores(counts: dict) -> dict[str, float]:
  """``{"precision", "recall", "f1"}`` from summed :func:`binary_counts`; 0 where a denominator
  is 0 (as scikit-learn's ``zero_division=0``)."""
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
  """``(steps, values)`` of ``run``'s ``key``, with ``pruned_<key>`` values at their steps."""
  points = [(r["step"], r[k]) for r in records if r["run"] == run
            for k in (key, f"pruned_{key}") if k in r]
  return [p[0] for p in points], [p[1] for p in points]


def plot_curves(records: Iterable[dict], panels=PANELS, title: str = "") -> Figure:
  """A figure with one panel per metric of ``panels`` that the records hold, one curve per run.

  Scores right after a pruning step (``pruned_*`` records) are marked with an ``x``.
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
  """Aligned lines of a table of each run's final metrics, without ``*_step_<k>`` columns.

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
