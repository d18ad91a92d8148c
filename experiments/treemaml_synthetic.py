"""MAML vs TreeMAML (true tree, learned tree) vs no adaptation on hierarchical regression.

Runs the launcher config (``configs/treemaml_linear.py`` or ``treemaml_sinusoid.py``, task
``meta_learning``) once per seed through :func:`gnrev.train.train_and_evaluate`, each seed in
``<workdir>/seed_<s>``, then reads their ``metrics.jsonl`` and reports the query MSE after each
inner step on the same held-out batches of tasks (mean and 95% interval, ``1.96 sd / sqrt(N)``
over batches and seeds), batch-transductively: pooling uses the other tasks of the held-out
batch. Writes ``treemaml_<kind>[_flat]<tag>.json`` and ``.png`` into the workdir, or into
``--results_dir`` (``experiments/results`` to update the committed results).

    python experiments/treemaml_synthetic.py --config=configs/treemaml_linear.py \\
        --workdir=runs/treemaml_linear
    python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py \\
        --workdir=runs/treemaml_sinusoid_flat --seeds=0,1 --config.task.family.hierarchical=False
    python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py \\
        --workdir=runs/treemaml_sinusoid_so --seeds=0,1 --config.task.first_order=False \\
        --tag=_second_order --runs=maml,shared_first_step,treemaml_true,treemaml_learned
    python experiments/treemaml_synthetic.py --config=configs/treemaml_linear.py:smoke \
        --workdir=/tmp/treemaml_smoke   # seed 0, runs maml, treemaml_true, treemaml_learned
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gnrev import train  # noqa: E402  (repo root on the path for script use)


def launch(config, workdir: str, seeds) -> dict:
  """Trains every run of ``config`` for each seed; returns ``{seed: final eval record per run}``."""
  finals = {}
  for seed in seeds:
    seed_config = copy.deepcopy(config)
    seed_config.seed = seed
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    train.train_and_evaluate(seed_config, seed_dir)
    records = train.read_metrics(seed_dir)
    finals[seed] = {run: [r for r in records if r["run"] == run and "test_loss" in r][-1]
                    for run in config.optimizers}
  return finals


def pooled(finals: dict, run: str, num_steps: int, num_batches: int) -> dict:
  """Mean, 95% interval and mean ARI per inner step over all seeds' held-out batches.

  Each seed's record holds the mean and (population) sd over its ``num_batches`` batches; their
  pooled variance is the mean over seeds of ``sd_s^2 + (mean_s - mean)^2`` (equal counts).
  """
  means = np.array([[finals[s][run][f"test_loss_step_{k}"] for k in range(num_steps + 1)]
                    for s in finals])
  stds = np.array([[finals[s][run][f"test_loss_std_step_{k}"] for k in range(num_steps + 1)]
                   for s in finals])
  mean = means.mean(0)
  sd = np.sqrt((stds ** 2 + (means - mean) ** 2).mean(0))
  half = 1.96 * sd / np.sqrt(num_batches * len(finals))
  aris = np.array([[finals[s][run][f"test_ari_step_{k}"] for k in range(1, num_steps + 1)]
                   for s in finals]).mean(0)
  return {"mean": mean.tolist(), "ci95": half.tolist(), "ari_vs_true_tree_per_step": aris.tolist()}


def summarise(config, finals: dict, wall_seconds: float) -> dict:
  task = config.task
  num_steps = len(task.inner_lrs)
  results = {run: pooled(finals, run, num_steps, task.num_test_batches)
             for run in config.optimizers}
  final = {m: r["mean"][-1] for m, r in results.items()}
  reduction = lambda m: (1 - final[m] / final["maml"]) if {"maml", m} <= set(final) else None
  return {
      "task": task.family.to_dict(), "seeds": list(finals), "meta_steps": task.steps_per_epoch *
      config.num_epochs, "num_test_batches": task.num_test_batches,
      "inner_lrs": list(task.inner_lrs), "first_order": task.first_order,
      "cluster": task.cluster.to_dict(),
      "outer": {run: {k: v for k, v in opt.to_dict().items() if k != "inner"}
                for run, opt in config.optimizers.items()},
      "query_mse_per_inner_step": results,
      "treemaml_true_vs_maml_reduction": reduction("treemaml_true"),
      "treemaml_learned_vs_maml_reduction": reduction("treemaml_learned"),
      "wall_seconds": wall_seconds,
  }


def plot(results: dict, title: str, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(4.5, 3.2), dpi=90, layout="constrained")
  ax = figure.subplots()
  for method, r in results.items():
    mean, half = np.array(r["mean"]), np.array(r["ci95"])
    steps = np.arange(len(mean))
    ax.plot(steps, mean, marker="o", label=method)
    ax.fill_between(steps, mean - half, mean + half, alpha=0.25)
  ax.set(xlabel="inner step", ylabel="query MSE", yscale="log", title=title)
  ax.legend(fontsize=7)
  figure.savefig(path)


def run_experiment(config, workdir: str, seeds, tag: str = "",
                   results_dir: str | None = None, runs=None) -> dict:
  """Launches every seed, then writes the summary JSON and PNG; returns the summary.

  ``runs``: the config's runs to launch (default: all).
  """
  if runs:
    unknown = sorted(set(runs) - set(config.optimizers))
    if unknown:
      raise ValueError(f"Unknown run(s) {', '.join(unknown)}; the config has "
                       f"{', '.join(config.optimizers)}.")
    config = copy.deepcopy(config)
    with config.unlocked():
      for run in set(config.optimizers) - set(runs):
        del config.optimizers[run]
  start = time.time()
  finals = launch(config, workdir, seeds)
  summary = summarise(config, finals, time.time() - start)
  family = config.task.family
  name = f"treemaml_{family.kind}" + ("" if family.hierarchical else "_flat") + tag
  out = results_dir or workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump(summary, f, indent=1, default=list)
  plot(summary["query_mse_per_inner_step"], name, os.path.join(out, name + ".png"))
  return summary


SMOKE_RUNS = ("maml", "treemaml_true", "treemaml_learned")  # a smoke run's, unless --runs


def _define_flags() -> None:
  """The script's flags, defined only when it runs as a script (tests import it)."""
  global _CONFIG, _WORKDIR, _RESULTS_DIR, _SEEDS, _TAG, _RUNS
  _CONFIG = config_flags.DEFINE_config_file("config", None, "A TreeMAML launcher config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of the launcher runs (one per seed).")
  _RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where the JSON and PNG go (default: "
                                     "the workdir; experiments/results to update the committed "
                                     "results).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (one launcher run each; a smoke "
                             "run: 0 unless given).")
  _TAG = flags.DEFINE_string("tag", "", "Suffix of the results' names, e.g. _20shot.")
  _RUNS = flags.DEFINE_list("runs", None, "The config's runs to launch (default: all; a smoke "
                            "run: " + ",".join(SMOKE_RUNS) + ").")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  train.metrics.quiet_library_logs()
  # A smoke run (--config=...:smoke) checks the pipeline, each run compiling its own steps: seed 0
  # and the runs of the summary's comparisons unless --seeds / --runs are given.
  smoke = "smoke" in flags.FLAGS["config"].config_filename.partition(":")[2].split(",")
  seeds = _SEEDS.value if _SEEDS.present or not smoke else ["0"]
  runs = _RUNS.value if _RUNS.present or not smoke else list(SMOKE_RUNS)
  summary = run_experiment(_CONFIG.value, _WORKDIR.value, [int(s) for s in seeds],
                           _TAG.value, _RESULTS_DIR.value, runs)
  for method, r in summary["query_mse_per_inner_step"].items():
    print(f"{method:18s} " + " ".join(f"{m:.4f}±{h:.4f}" for m, h in zip(r["mean"], r["ci95"]))
          + "  ARI " + " ".join(f"{a:.3f}" for a in r["ari_vs_true_tree_per_step"]), flush=True)
  print(json.dumps({k: summary[k] for k in ("treemaml_true_vs_maml_reduction",
                                            "treemaml_learned_vs_maml_reduction",
                                            "wall_seconds")}))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
