"""Return prediction on the customer-variant graph: does the graph model beat per-event models?

Launches ``configs/graph_returns.py`` (task ``edge_classification``) through the one trainer,
:func:`gnrev.train.train_and_evaluate`, for every model (the GNN, the per-event MLP, logistic
regression) and seed, each in its own workdir, then reads their ``metrics.jsonl`` and reports
the held-out precision / recall / F1 / cross-entropy table of McGowan et al. (arXiv 2302.14096,
Table 2) over seeds and FishLeg against Adam on the GNN. Every run is early-stopped on its
validation cross-entropy; the table holds the test scores at the best validation evaluation.

  python experiments/graph_returns.py --workdir=runs/graph_returns
  python experiments/graph_returns.py --config=configs/graph_returns.py:smoke --seeds=0 \
      --workdir=runs/graph_returns_smoke

Writes ``graph_returns.json`` (table, race, per-run records) and ``graph_returns.png`` into the
workdir, or into ``--results_dir`` (e.g. ``experiments/results``) when given. Re-running on the
same workdir resumes (finished runs are not trained again).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gnrev import train  # noqa: E402  (repo root on the path for script use)

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "graph_returns.py")
MODELS = ("logreg", "edge_mlp", "gnn")
METRICS = ("precision", "recall", "f1", "loss")
PER_EVENT = ("logreg/adam", "edge_mlp/adam", "edge_mlp/gauss_newton")


def launch(workdir: str, seeds, models=MODELS, smoke: bool = False, overrides=None) -> dict:
  """Trains every model and seed; returns ``{model: {seed: train_and_evaluate's results}}``.

  ``overrides``: ``config -> None`` applied to every config before it runs (e.g. sizes).
  """
  out = {}
  for model in models:
    for seed in seeds:
      config = train.load_config(CONFIG, f"model={model},seed={seed}" + (",smoke" if smoke else ""))
      if overrides is not None:
        overrides(config)
      results = train.train_and_evaluate(config, os.path.join(workdir, model, f"seed_{seed}"))
      out.setdefault(model, {})[seed] = {
          run: {k: v for k, v in r.items() if k != "params"} for run, r in results.items()}
  return out


def best_record(records: list[dict], run: str) -> dict:
  """The run's evaluation with the lowest validation loss (the first, on ties): early stopping's."""
  evaluated = [r for r in records if r["run"] == run and "val_loss" in r]
  return min(evaluated, key=lambda r: r["val_loss"])


def first_reaching(records: list[dict], run: str, target: float) -> int | None:
  """The first evaluated step whose validation loss is <= ``target``."""
  for r in records:
    if r["run"] == run and "val_loss" in r and r["val_loss"] <= target:
      return r["step"]
  return None


def mean_std(values) -> dict:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def summarise(workdir: str, launched: dict) -> dict:
  """The test table (mean and std over seeds), GNN-vs-per-event gaps and FishLeg vs Adam.

  FishLeg vs Adam: per seed, the target is the worse of the two runs' best validation losses
  (a level both reach); each run's step to first reach it, and its seconds per training step.
  """
  per_run, race = {}, []
  for model, seeds in launched.items():
    for seed, results in seeds.items():
      records = train.read_metrics(os.path.join(workdir, model, f"seed_{seed}"))
      for run in results:
        best = best_record(records, run)
        per_run.setdefault(f"{model}/{run}", []).append(
            {"seed": seed, "best_step": best["step"], "stopped_step": results[run]["step"],
             "val_loss": best["val_loss"], **{m: best[f"test_{m}"] for m in METRICS}})
      if model == "gnn" and {"adam", "fishleg"} <= set(results):
        target = max(best_record(records, "adam")["val_loss"],
                     best_record(records, "fishleg")["val_loss"])
        entry = {"seed": seed, "target_val_loss": target}
        for run in ("adam", "fishleg"):
          entry[f"{run}_steps"] = first_reaching(records, run, target)
          timing = results[run]
          entry[f"{run}_seconds_per_step"] = (timing["train_seconds"] /
                                              max(timing["trained_steps"], 1))
        race.append(entry)
  table = {run: {**{m: mean_std([r[m] for r in seeds]) for m in METRICS},
                 "best_step": mean_std([r["best_step"] for r in seeds])}
           for run, seeds in per_run.items()}
  summary = {"table": table, "runs": per_run}
  per_event = [r for r in PER_EVENT if r in table]
  if "gnn/adam" in table and per_event:
    best_f1 = max(per_event, key=lambda r: table[r]["f1"]["mean"])
    best_loss = min(per_event, key=lambda r: table[r]["loss"]["mean"])
    summary["gnn_vs_best_per_event"] = {
        "f1_gain": table["gnn/adam"]["f1"]["mean"] - table[best_f1]["f1"]["mean"],
        "best_per_event_f1_run": best_f1,
        "cross_entropy_drop": table[best_loss]["loss"]["mean"] - table["gnn/adam"]["loss"]["mean"],
        "best_per_event_cross_entropy_run": best_loss}
  if race:
    summary["fishleg_vs_adam_gnn"] = race
  return summary


def plot(workdir: str, launched: dict, summary: dict, path: str) -> None:
  """GNN validation loss vs steps (Adam vs FishLeg, every seed) and the test table."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(9, 3.6), layout="constrained")
  curves, bars = figure.subplots(1, 2)
  for seed in launched.get("gnn", {}):
    records = train.read_metrics(os.path.join(workdir, "gnn", f"seed_{seed}"))
    for color, run in enumerate(("adam", "fishleg")):
      points = [(r["step"], r["val_loss"]) for r in records if r["run"] == run and "val_loss" in r]
      if points:
        steps, values = np.array(points).T
        curves.plot(steps, values, color=f"C{color}", lw=1, label=f"gnn/{run}" if seed == min(
            launched["gnn"]) else None)
  curves.set(xlabel="step", ylabel="validation cross-entropy", title="GNN: Adam vs FishLeg")
  if curves.get_legend_handles_labels()[0]:
    curves.legend()
  table = summary["table"]
  names = list(table)
  width = 0.8 / len(METRICS)
  for k, metric in enumerate(METRICS):
    bars.bar(np.arange(len(names)) + k * width, [table[n][metric]["mean"] for n in names], width,
             yerr=[table[n][metric]["std"] for n in names],
             label="cross-entropy" if metric == "loss" else metric)
  bars.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=8, rotation=20)
  bars.set(title="test scores at the best validation step (mean, std over seeds)")
  bars.legend(fontsize=7)
  figure.savefig(path, dpi=80)


def run_experiment(workdir: str, seeds=(0, 1, 2), models=MODELS, smoke: bool = False,
                   results_dir: str | None = None, overrides=None) -> dict:
  """Launches every model and seed, then writes the summary JSON and PNG; returns the summary."""
  launched = launch(workdir, seeds, models, smoke, overrides)
  summary = summarise(workdir, launched)
  out = results_dir or workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "graph_returns.json"), "w") as f:
    json.dump({"seeds": list(seeds), "models": list(models), "smoke": smoke, **summary}, f,
              indent=1)
  plot(workdir, launched, summary, os.path.join(out, "graph_returns.png"))
  return summary


_WORKDIR = flags.DEFINE_string("workdir", "runs/graph_returns", "Workdir of the launcher runs.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where the JSON and PNG go (default: "
                                   "the workdir; experiments/results to update the committed "
                                   "results).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (a smoke run: 0 unless given).")
_MODELS = flags.DEFINE_list("models", list(MODELS), "Models (gnn, edge_mlp, logreg).")
_CONFIG = flags.DEFINE_string("config", CONFIG, "The config, with ':smoke' for smoke-size runs "
                              "(seconds); models and seeds come from --models and --seeds.")


def main(argv):
  del argv
  train.metrics.quiet_library_logs()
  path, _, arg = _CONFIG.value.partition(":")
  if os.path.abspath(path) != CONFIG or arg not in ("", "smoke"):
    raise app.UsageError(f"--config={_CONFIG.value}: this experiment runs {CONFIG}, with ':smoke' "
                         f"as its only colon argument.")
  seeds = _SEEDS.value if _SEEDS.present or arg != "smoke" else ["0"]
  summary = run_experiment(_WORKDIR.value, [int(s) for s in seeds], tuple(_MODELS.value),
                           arg == "smoke", _RESULTS_DIR.value)
  print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
  app.run(main)
