"""Run artefacts: JSON-lines metrics, a console progress bar, PNG plots of the curves, and the
binary precision / recall / F1 of two-class runs."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

if TYPE_CHECKING:  # matplotlib loads in plot_curves only: importing gnrev.train stays fast
  from matplotlib.figure import Figure


class JsonlWriter:
  """Appends one JSON object per record to ``path``, flushed at once (survives a kill).

  ``truncate_after(run, step)`` drops records of ``run`` past ``step``, so that a resumed run does
  not repeat the ones written between its last checkpoint and the interruption.
  """

  def __init__(self, path: str):
    self.path = path

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def truncate_after(self, run: str, step: int) -> None:
    kept = [r for r in read_metrics(self.path) if not (r["run"] == run and r["step"] > step)]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)


def read_metrics(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl`` file (or of ``workdir/metrics.jsonl`` given a dir)."""
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_bar(total: int, initial: int, run: str) -> tqdm.tqdm:
  """A progress bar with steps/s; silent when stderr is not a terminal."""
  return tqdm.tqdm(total=total, initial=initial, desc=run, unit="step",
                   disable=not sys.stderr.isatty(), dynamic_ncols=True)


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
