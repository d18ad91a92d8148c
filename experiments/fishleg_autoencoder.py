"""FishLeg vs Adam vs SGD-momentum on the paper's MNIST autoencoder: curves over seeds.

Trains the config (``--config``, default ``configs/fishleg_autoencoder.py``) once per seed and
run, in this process, each in its own workdir ``<workdir>/seed<s>/<run>`` (so that each run's
wall-clock is its own), reads every ``metrics.jsonl`` and writes ``fishleg_autoencoder.json``
(curves, per-run summaries, verdict) and ``fishleg_autoencoder.png`` (test NLL against steps and
against wall-clock) into ``<workdir>/out``. No optimizer loop lives here: training is the
trainer's.

    nice -n 10 python experiments/fishleg_autoencoder.py --seeds=0,1,2 --results
    python experiments/fishleg_autoencoder.py --config=configs/fishleg_autoencoder.py:smoke \
        --seeds=0 --workdir=runs/fishleg_autoencoder_smoke

``--results`` writes into experiments/results/ instead of <workdir>/out; a colon argument of
``--config`` (e.g. ``:smoke``, seconds per run) is passed on with each run's ``seed`` and
``runs``. Wall-clock is the run's time in ``train_and_evaluate`` (compilation and evaluations
included; a later seed reuses the compilations of the first) spread evenly over its steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from gnrev import train  # noqa: E402  (repo root on the path for script use)

CONFIG = os.path.join(REPO, "configs", "fishleg_autoencoder.py")
RESULTS = os.path.join(REPO, "experiments", "results")


def launch(config_path: str, arg: str, seed: int, run: str, workdir: str,
           num_epochs: int = 0) -> float:
  """Trains one (seed, run) of the config; returns its wall-clock seconds."""
  config = train.load_config(config_path, ",".join(filter(None, [f"seed={seed},runs={run}", arg])))
  if num_epochs:
    config.num_epochs = num_epochs
  tic = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  return time.perf_counter() - tic


def read_curve(workdir: str, run: str, seconds: float) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  records = [r for r in records if r.get("run") == run]
  last_step = max(r["step"] for r in records)
  test = [(r["step"], r["test_loss"]) for r in records if "test_loss" in r]
  train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  return {"step": [s for s, _ in test], "test_loss": [v for _, v in test],
          "time": [seconds * s / last_step for s, _ in test],
          "train_step": [s for s, _ in train], "train_loss": [v for _, v in train],
          "skipped": int(sum(r.get("skipped", 0) for r in records)),
          "seconds": seconds}


def summarise(curves: dict) -> dict:
  summary = {}
  for run, seeds in curves.items():
    final = [c["test_loss"][-1] for c in seeds]
    best = [min(c["test_loss"]) for c in seeds]
    # Training NLL: the mean of the logged minibatch losses over the last epoch (40 steps).
    last_epoch = [float(np.mean([v for s, v in zip(c["train_step"], c["train_loss"])
                                 if s > c["train_step"][-1] - 40])) for c in seeds]
    summary[run] = {"final_test_nll_mean": float(np.mean(final)),
                    "final_test_nll_std": float(np.std(final)),
                    "final_test_nll_per_seed": final,
                    "best_test_nll_mean": float(np.mean(best)),
                    "best_test_nll_std": float(np.std(best)),
                    "last_epoch_train_nll_mean": float(np.mean(last_epoch)),
                    "last_epoch_train_nll_std": float(np.std(last_epoch)),
                    "finite": bool(np.all(np.isfinite(final))),
                    "skipped_steps": int(sum(c["skipped"] for c in seeds)),
                    "seconds_mean": float(np.mean([c["seconds"] for c in seeds]))}
  adams = {k: v for k, v in summary.items() if k.startswith("adam")}
  verdict = {}
  if adams and "fishleg" in summary:
    best = min(adams, key=lambda k: adams[k]["final_test_nll_mean"])
    fishleg = summary["fishleg"]
    verdict = {"best_adam": best, "best_adam_test_nll": adams[best]["final_test_nll_mean"],
               "fishleg_test_nll": fishleg["final_test_nll_mean"],
               "fishleg_beats_best_adam": bool(
                   fishleg["finite"] and fishleg["skipped_steps"] == 0 and
                   fishleg["final_test_nll_mean"] < adams[best]["final_test_nll_mean"])}
  return {"runs": summary, "verdict": verdict}


def plot(curves: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for color, (run, seeds) in enumerate(curves.items()):
    for i, c in enumerate(seeds):
      label = {"label": run} if i == 0 else {}
      axes[0].plot(c["step"], c["test_loss"], color=f"C{color}", lw=1, **label)
      axes[1].plot(c["time"], c["test_loss"], color=f"C{color}", lw=1)
  for ax, xlabel in zip(axes, ("step", "wall-clock (s, launcher process)")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test NLL (nats per digit)")
    ax.set_yscale("log")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=CONFIG,
                      help="config file[:arg], e.g. configs/fishleg_autoencoder.py:smoke")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--runs", default="", help="'+'-separated subset of the config's runs")
  parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "fishleg_autoencoder"))
  parser.add_argument("--results", action="store_true", help="write into experiments/results")
  parser.add_argument("--num_epochs", type=int, default=0,
                      help="override the config's 50 epochs (40 steps each); 0: keep")
  parser.add_argument("--resummarise", default="",
                      help="no training: re-read the curves of this results JSON and rewrite its "
                           "summary, verdict and figure next to it")
  args = parser.parse_args(argv)
  if args.resummarise:
    with open(args.resummarise) as f:
      results = json.load(f)
    results.update(summarise(results["curves"]))
    with open(args.resummarise, "w") as f:
      json.dump(results, f, indent=1)
    plot(results["curves"], os.path.splitext(args.resummarise)[0] + ".png")
    print(json.dumps({"runs": results["runs"], "verdict": results["verdict"]}, indent=1))
    return results
  config_path, _, arg = args.config.partition(":")
  runs = args.runs.split("+") if args.runs else list(train.load_config(config_path,
                                                                        arg).optimizers)
  curves = {run: [] for run in runs}
  for seed in (int(s) for s in args.seeds.split(",") if s):
    for run in runs:
      workdir = os.path.join(args.workdir, f"seed{seed}", run)
      seconds = launch(config_path, arg, seed, run, workdir, args.num_epochs)
      curves[run].append(read_curve(workdir, run, seconds))
  out = RESULTS if args.results else os.path.join(args.workdir, "out")
  os.makedirs(out, exist_ok=True)
  results = {"seeds": args.seeds, "config": args.config,
             "smoke": "smoke" in arg.split(","), "num_epochs": args.num_epochs or 50,
             **summarise(curves), "curves": curves}
  with open(os.path.join(out, "fishleg_autoencoder.json"), "w") as f:
    json.dump(results, f, indent=1)
  plot(curves, os.path.join(out, "fishleg_autoencoder.png"))
  print(json.dumps({"runs": results["runs"], "verdict": results["verdict"]}, indent=1))
  return results


if __name__ == "__main__":
  main()
