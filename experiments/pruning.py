"""FishLeg Surgeon vs diagonal-Fisher OBS vs magnitude pruning: the launcher's runs, tabulated.

Config and protocol: ``configs/pruning.py``. For every model and seed this script runs the
launcher twice (:func:`gnrev.train.train_and_evaluate`): the dense model, then every pruning
variant from its checkpoint (``config.init_from``); it steps no optimizer itself. It then reads
the runs' ``metrics.jsonl`` and tabulates test accuracy (mean and std over seeds) per method,
ranking, schedule and sparsity, without fine-tuning (the step-0 ``pruned_test_accuracy``: one-shot,
or multi-step without training between the steps) and with it (the last ``test_accuracy``).

Run (the committed results; workdirs under ``runs/pruning``):

  nice -n 10 python experiments/pruning.py --models=mlp --write_results
  nice -n 10 python experiments/pruning.py --models=cnn --write_results
  python experiments/pruning.py --analyse_only --write_results     # table of both

Smoke run (seconds): ``--config=configs/pruning.py:smoke --workdir=/tmp/pruning_smoke``
(``--config`` names the config and a colon argument passed on to each of its launches).
Re-running resumes every run from its checkpoints. ``--write_results`` writes ``experiments/results/pruning_mnist5k.json`` and
``.png``; without it nothing is written outside ``--workdir``.

JSON: ``dense[model]`` per-seed dense accuracy; ``accuracy[model][variant][sparsity]`` with
``no_ft`` / ``ft`` per-seed accuracies (variant ``<method>_<ranking>_<schedule>``);
``fls_margin[model][variant-suffix][baseline][sparsity]``: mean FLS accuracy minus the
baseline's, with the std of the per-seed differences; ``wall_seconds`` per model.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from gnrev import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
CONFIG = os.path.join(ROOT, "configs", "pruning.py")


def config_for(model: str, seed: int, stage: str, smoke: bool, path: str = CONFIG):
  arg = f"model={model},seed={seed},stage={stage}" + (",smoke" if smoke else "")
  return train.load_config(path, arg)


def run_model(model: str, seeds, workdir: str, smoke: bool, path: str = CONFIG) -> float:
  """Dense training, then the pruning launch, for every seed; returns the wall-clock seconds."""
  start = time.time()
  for seed in seeds:
    dense_dir = os.path.join(workdir, f"{model}_s{seed}", "dense")
    train.train_and_evaluate(config_for(model, seed, "dense", smoke, path), dense_dir)
    config = config_for(model, seed, "prune", smoke, path)
    config.init_from.workdir = dense_dir
    train.train_and_evaluate(config, os.path.join(workdir, f"{model}_s{seed}", "prune"))
    print(f"{model} seed {seed}: {time.time() - start:.0f}s", flush=True)
  return time.time() - start


def _split(name: str):
  """``fishleg_surgeon_global_oneshot_90`` -> (``fishleg_surgeon_global_oneshot``, 0.9)."""
  variant, _, pct = name.rpartition("_")
  return variant, int(pct) / 100


def read_seed(workdir: str) -> tuple[float, dict]:
  """``(dense accuracy, {variant: {sparsity: {"no_ft", "ft"}}})`` from one seed's metrics."""
  dense = [r for r in train.read_metrics(os.path.join(workdir, "dense"))
           if "test_accuracy" in r]
  out = {}
  records = train.read_metrics(os.path.join(workdir, "prune"))
  for run in dict.fromkeys(r["run"] for r in records):
    mine = [r for r in records if r["run"] == run]
    variant, sparsity = _split(run)
    first = next(r for r in mine if r["step"] == 0)
    last = [r for r in mine if "test_accuracy" in r][-1]
    directory = os.path.join(workdir, "prune", run, "checkpoints")
    if not os.path.isdir(directory) or last["step"] not in train.checkpoint_steps(directory):
      continue  # not finished (the final checkpoint is written with the last record)
    if abs(last["sparsity"] - sparsity) > 2e-3:
      raise ValueError(f"{run}: final sparsity {last['sparsity']} is not {sparsity}.")
    by_sparsity = out.setdefault(variant, {})
    by_sparsity.setdefault(str(sparsity), {})["ft"] = last["test_accuracy"]
    if variant.endswith("oneshot"):
      by_sparsity[str(sparsity)]["no_ft"] = first["pruned_test_accuracy"]
    for key, value in first.items():  # the one-shot sweep: no fine-tuning
      if key.startswith("sweep") and key.endswith("_test_accuracy"):
        swept = str(int(key[len("sweep"):].split("_")[0]) / 100)
        by_sparsity.setdefault(swept, {})["no_ft"] = value
  return dense[-1]["test_accuracy"], out


def analyse(workdir: str, models, seeds) -> dict:
  results = {"dense": {}, "accuracy": {}, "fls_margin": {}}
  for model in models:
    present = [seed for seed in seeds
               if os.path.isdir(os.path.join(workdir, f"{model}_s{seed}", "prune"))]
    per_seed = [read_seed(os.path.join(workdir, f"{model}_s{seed}")) for seed in present]
    if not per_seed:
      continue
    results["dense"][model] = [d for d, _ in per_seed]
    # Each cell over the seeds that finished its run (``seeds`` names them).
    table = {}
    for index, (_, variants) in enumerate(per_seed):
      for variant, by_sparsity in variants.items():
        for sparsity, entry in by_sparsity.items():
          cell = table.setdefault(variant, {}).setdefault(sparsity, {})
          for key, value in entry.items():
            cell.setdefault(key, []).append(value)
            cell.setdefault(f"{key}_seeds", []).append(present[index])
    results["accuracy"][model] = table
    margins = {}
    for variant in table:
      if not variant.startswith("fishleg_surgeon_"):
        continue
      suffix = variant[len("fishleg_surgeon_"):]
      for baseline in ("diagonal_fisher", "magnitude"):
        other = table.get(f"{baseline}_{suffix}")
        if other is None:
          continue
        for sparsity, entry in table[variant].items():
          for key in ("no_ft", "ft"):
            if key not in entry or key not in other.get(sparsity, {}):
              continue
            mine = dict(zip(entry[f"{key}_seeds"], entry[key]))
            theirs = dict(zip(other[sparsity][f"{key}_seeds"], other[sparsity][key]))
            diff = np.array([mine[k] - theirs[k] for k in mine if k in theirs])
            margins.setdefault(f"{suffix}_{key}", {}).setdefault(baseline, {})[sparsity] = (
                float(diff.mean()), float(diff.std()), len(diff))
    results["fls_margin"][model] = margins
  return results


def markdown(results: dict) -> str:
  """One table per model: rows variant x fine-tuning, columns sparsity, mean ± std (points)."""
  lines = []
  for model, table in results["accuracy"].items():
    dense = np.array(results["dense"][model]) * 100
    lines.append(f"\n{model}: dense {dense.mean():.1f} ± {dense.std():.1f}% "
                 f"({len(dense)} seeds)\n")
    sparsities = sorted({s for v in table.values() for s in v}, key=float)
    lines.append("| variant | FT | " + " | ".join(f"{float(s):.0%}" for s in sparsities) + " |")
    lines.append("|---|---|" + "---|" * len(sparsities))
    for variant in sorted(table, key=lambda v: (v.split("_")[-1], v.split("_")[-2], v)):
      for key in ("no_ft", "ft"):
        cells = []
        for s in sparsities:
          values = np.array(table[variant].get(s, {}).get(key, [])) * 100
          n = "" if len(values) == len(dense) else f" (n={len(values)})"
          cells.append(f"{values.mean():.1f} ± {values.std():.1f}{n}" if len(values) else "—")
        if any(key in table[variant][s] for s in table[variant]):
          lines.append(f"| {variant} | {'yes' if key == 'ft' else 'no'} | " + " | ".join(cells)
                       + " |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  models = list(results["accuracy"])
  panels = [("global_oneshot", "no_ft"), ("layer_oneshot", "no_ft")]
  fig, axes = plt.subplots(len(models), len(panels), figsize=(3.2 * len(panels),
                                                              3 * len(models)), squeeze=False)
  colours = {"fishleg_surgeon": "C0", "diagonal_fisher": "C1", "magnitude": "C2"}
  for row, model in enumerate(models):
    table = results["accuracy"][model]
    for col, (suffix, key) in enumerate(panels):
      ax = axes[row, col]
      for method, colour in colours.items():
        entry = table.get(f"{method}_{suffix}")
        if not entry:
          continue
        sparsities = sorted((s for s in entry if key in entry[s]), key=float)
        mean = [np.mean(entry[s][key]) for s in sparsities]
        std = [np.std(entry[s][key]) for s in sparsities]
        ax.errorbar([float(s) for s in sparsities], mean, std,
                    label=method, color=colour, marker="o", capsize=3)
      ax.axhline(np.mean(results["dense"][model]), color="k", ls="--", lw=1, label="dense")
      ax.set(title=f"{model} {suffix} {'fine-tuned' if key == 'ft' else 'no FT'}",
             xlabel="sparsity", ylabel="test accuracy", ylim=(0, 1))
      ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=70)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  train.metrics.quiet_library_logs()
  path, _, arg = FLAGS.config.partition(":")
  smoke_seed = arg == "smoke" and not FLAGS["seeds"].present  # a smoke run: seed 0 unless given
  models, seeds = FLAGS.models, [0] if smoke_seed else [int(s) for s in FLAGS.seeds]
  if arg not in ("", "smoke"):
    raise app.UsageError(f"--config={FLAGS.config}: the only colon argument is 'smoke' (the "
                         f"models, seeds and stages come from --models and --seeds).")
  wall = {}
  if not FLAGS.analyse_only:
    os.makedirs(FLAGS.workdir, exist_ok=True)
    # The runs of a launch compile the same steps (same model and optimizer): a persistent
    # compilation cache turns every compilation after the first into a cache hit.
    jax.config.update("jax_compilation_cache_dir", os.path.join(FLAGS.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    for model in models:
      wall[model] = run_model(model, seeds, FLAGS.workdir, arg == "smoke", path)
  results = analyse(FLAGS.workdir, models, seeds)
  results["wall_seconds"] = wall
  print(markdown(results))
  if FLAGS.write_results:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "pruning_mnist5k.json")
    if wall and os.path.exists(path):  # keep the other model's wall-clock
      results["wall_seconds"] = {**json.load(open(path)).get("wall_seconds", {}), **wall}
    with open(path, "w") as f:
      json.dump(results, f, indent=1)
    plot(results, os.path.join(RESULTS, "pruning_mnist5k.png"))


if __name__ == "__main__":
  flags.DEFINE_list("models", ["mlp", "cnn"], "Models of configs/pruning.py to run.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (a smoke run: 0 unless given).")
  flags.DEFINE_string("workdir", "runs/pruning", "Launcher workdirs, one per model, seed, stage.")
  flags.DEFINE_string("config", CONFIG, "The config, with ':smoke' for its smoke size (seconds).")
  flags.DEFINE_bool("analyse_only", False, "Tabulate the existing workdirs; train nothing.")
  flags.DEFINE_bool("write_results", False, "Write experiments/results/pruning_mnist5k.*.")
  app.run(main)
