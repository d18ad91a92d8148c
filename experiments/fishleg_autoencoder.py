"""FishLeg against Adam, SGD-momentum and its peers on the paper's MNIST autoencoder, both inits.

Trains the launcher config (``--config``, default ``configs/fishleg_autoencoder.py``) for every (seed, run, init) in one
process (``gnrev.train.train_and_evaluate`` per run: no subprocess, data loaded once per
process), reads each run's ``metrics.jsonl`` and writes ``fishleg_autoencoder.json`` (curves,
per-run summaries, verdict per init) and ``fishleg_autoencoder.png`` (train and test NLL against
steps, test NLL against wall-clock, one row per init). No optimizer loop lives here: training
is the trainer's.

    nice -n 10 python experiments/fishleg_autoencoder.py --seeds=0,1,2 --inits=flax,pytorch --results
    python experiments/fishleg_autoencoder.py --config=configs/fishleg_autoencoder.py:smoke \
        --seeds=0 --workdir=runs/fishleg_autoencoder_smoke

``--results`` writes into experiments/results/ (default: <workdir>/out), after every run, and
resumes: a (seed, run, init) already in the JSON is not trained again, so a long sweep can be
stopped and continued. A colon argument of ``--config`` (e.g. ``:smoke``, seconds per run) is
passed on with each run's ``seed``, ``runs`` and ``init``; a smoke run trains init ``flax`` and
runs ``fishleg`` and ``adam_1em3`` unless ``--inits`` / ``--runs`` say otherwise.
Wall-clock is the trainer's ``train_seconds`` of the run (first-step compilation included,
evaluations excluded) spread evenly over its steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "fishleg_autoencoder.py")
RESULTS = os.path.join(REPO, "experiments", "results")
NAME = "fishleg_autoencoder"
sys.path.insert(0, REPO)  # the repo root, for configs/ and gnrev when run as a script
SMOKE_RUNS = ("fishleg", "adam_1em3")  # what a smoke run trains unless --runs says otherwise
LAYOUT = "curves[init][run] = [one curve per seed]"  # results written before it are not resumed


def _load_config(config_flag: str, arg: str):
  """The config of ``--config`` (``path[:arg]``) with ``arg`` added to its own colon argument."""
  from gnrev import train  # pylint: disable=import-outside-toplevel
  path, _, own = config_flag.partition(":")
  return train.load_config(path, ",".join(filter(None, [arg, own])))


def train_one(config_flag: str, seed: int, run: str, init: str, workdir: str,
              num_epochs: int = 0) -> dict:
  """Trains one (seed, run, init) through the trainer; returns its curve."""
  from gnrev import train  # pylint: disable=import-outside-toplevel
  config = _load_config(config_flag, f"seed={seed},runs={run},init={init}")
  if num_epochs:
    config.num_epochs = num_epochs
  tic = time.perf_counter()
  result = train.train_and_evaluate(config, workdir)[run]
  return read_curve(workdir, run, result["train_seconds"], time.perf_counter() - tic)


def read_curve(workdir: str, run: str, train_seconds: float, process_seconds: float) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  records = [r for r in records if r.get("run") == run]
  last_step = max(r["step"] for r in records)
  test = [(r["step"], r["test_loss"]) for r in records if "test_loss" in r]
  train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
  return {"step": [s for s, _ in test], "test_loss": [v for _, v in test],
          "time": [train_seconds * s / last_step for s, _ in test],
          "train_step": [s for s, _ in train], "train_loss": [v for _, v in train],
          "skipped": int(sum(r.get("skipped", 0) for r in records)),
          "last_step": last_step, "seconds": train_seconds, "process_seconds": process_seconds}


def read_unfinished(workdir: str, run: str) -> dict:
  """The curve of a run stopped before its last step, from the records written so far.

  Wall-clock: from the workdir's ``config.json`` (written before training) to the last write of
  ``metrics.jsonl``, so it includes compilation and evaluations.
  """
  seconds = (os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) -
             os.path.getmtime(os.path.join(workdir, "config.json")))
  return {**read_curve(workdir, run, seconds, seconds), "finished": False}


def _last_epoch_train(curve: dict, steps_per_epoch: int = 40) -> float:
  """Training NLL: the mean of the logged minibatch losses over the last epoch."""
  last = curve["train_step"][-1]
  return float(np.mean([v for s, v in zip(curve["train_step"], curve["train_loss"])
                        if s > last - steps_per_epoch]))


def _at_step(curve: dict, step: int) -> dict:
  """The curve up to ``step`` (for comparing a stopped run with finished ones at equal steps)."""
  keep = lambda steps, values: [v for s, v in zip(steps, values) if s <= step]
  return {**curve, "train_step": keep(curve["train_step"], curve["train_step"]),
          "train_loss": keep(curve["train_step"], curve["train_loss"]),
          "step": keep(curve["step"], curve["step"]),
          "test_loss": keep(curve["step"], curve["test_loss"])}


def summarise(curves: dict) -> dict:
  """Per init and run: train NLL, final and best test NLL (mean, std over seeds), seconds;
  per init the verdict: FishLeg against the best Adam in training NLL."""
  summary, verdict = {}, {}
  for init, runs in curves.items():
    summary[init] = {}
    for run, seeds in runs.items():
      stats = {"train_nll": [_last_epoch_train(c) for c in seeds],
               "final_test_nll": [c["test_loss"][-1] for c in seeds],
               "best_test_nll": [float(np.nanmin(c["test_loss"])) for c in seeds]}
      entry = {f"{k}_{f}": float(fn(v)) for k, v in stats.items()
               for f, fn in (("mean", np.mean), ("std", np.std))}
      entry.update({"seeds": len(seeds),
                    "steps": min(c.get("last_step", c["step"][-1]) for c in seeds),
                    "finished": all(c.get("finished", True) for c in seeds),
                    "finite": bool(np.all(np.isfinite(
                        stats["final_test_nll"]))),
                    "skipped_steps": int(sum(c["skipped"] for c in seeds)),
                    "seconds_mean": float(np.mean([c["seconds"] for c in seeds]))})
      summary[init][run] = entry
    adams = {k: v for k, v in summary[init].items() if k.startswith("adam") and v["finite"]}
    if adams and "fishleg" in summary[init]:
      best = min(adams, key=lambda k: adams[k]["train_nll_mean"])
      fishleg = summary[init]["fishleg"]
      verdict[init] = {
          "fishleg_steps": fishleg["steps"],
          "best_adam_by_train_nll": best, "best_adam_train_nll": adams[best]["train_nll_mean"],
          "fishleg_train_nll": fishleg["train_nll_mean"],
          "fishleg_below_best_adam_in_train_nll": bool(
              fishleg["finite"] and fishleg["train_nll_mean"] < adams[best]["train_nll_mean"]),
          "best_adam_best_test_nll": min(a["best_test_nll_mean"] for a in adams.values()),
          "fishleg_best_test_nll": fishleg["best_test_nll_mean"]}
      if not fishleg["finished"]:
        # Every finished run at the step the stopped FishLeg run reached.
        step = fishleg["steps"]
        verdict[init]["at_fishleg_steps"] = {
            run: {"train_nll": float(np.mean([_last_epoch_train(_at_step(c, step))
                                              for c in seeds])),
                  "test_nll": float(np.mean([_at_step(c, step)["test_loss"][-1]
                                             for c in seeds]))}
            for run, seeds in runs.items()}
  return {"runs": summary, "verdict": verdict}


def table(results: dict) -> str:
  """The summary as a markdown table: one row per run, train / final test / best test NLL and
  seconds per init (mean over seeds; "-" where a run has not been trained)."""
  inits = list(results["runs"])
  runs = list(dict.fromkeys(run for init in inits for run in results["runs"][init]))
  head = "| run | " + " | ".join(f"{init}: train / final test / best test NLL, s"
                                  for init in inits) + " |"
  lines = [head, "|---" * (len(inits) + 1) + "|"]
  for run in runs:
    cells = []
    for init in inits:
      entry = results["runs"][init].get(run)
      cells.append("-" if entry is None else (
          f"{entry['train_nll_mean']:.1f} / {entry['final_test_nll_mean']:.1f} / "
          f"{entry['best_test_nll_mean']:.1f}, {entry['seconds_mean']:.0f}" +
          ("" if entry["finished"] else f" (stopped at step {entry['steps']})")))
    lines.append(f"| {run} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(curves: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  inits = list(curves)
  fig, axes = plt.subplots(len(inits), 3, figsize=(14, 3.8 * len(inits)), squeeze=False)
  for row, init in zip(axes, inits):
    for color, (run, seeds) in enumerate(curves[init].items()):
      # tab20: one colour per run up to 20 (the default cycle repeats after 10).
      style = {"color": plt.get_cmap("tab20").colors[color % 20], "lw": 1.2,
               "ls": "-" if run.startswith(("fishleg", "adam")) else "--"}
      for i, c in enumerate(seeds):
        label = {"label": run} if i == 0 else {}
        row[0].plot(c["train_step"], c["train_loss"], **style, **label)
        row[1].plot(c["step"], c["test_loss"], **style)
        row[2].plot(c["time"], c["test_loss"], **style)
    for ax, (xlabel, ylabel) in zip(row, (("step", "train NLL (minibatch)"),
                                          ("step", "test NLL"),
                                          ("wall-clock (s, train_seconds)", "test NLL"))):
      ax.set_xlabel(xlabel)
      ax.set_ylabel(f"{ylabel}, {init} init")
      ax.set_yscale("log")
      ax.set_ylim(50, 600)
    row[0].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _write(results: dict, out: str) -> None:
  results.update(summarise(results["curves"]))
  with open(os.path.join(out, f"{NAME}.json"), "w") as f:
    json.dump(results, f, indent=1)
  plot(results["curves"], os.path.join(out, f"{NAME}.png"))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=CONFIG,
                      help="the launcher config, optionally with its colon argument (path:smoke)")
  parser.add_argument("--seeds", default="0", help="comma-separated seeds")
  parser.add_argument("--inits", default=None,
                      help="comma-separated model inits (default flax,pytorch; smoke: flax)")
  parser.add_argument("--runs", default=None, help="'+'-separated subset of the config's runs "
                      "(default: all; smoke: " + "+".join(SMOKE_RUNS) + ")")
  parser.add_argument("--workdir", default=os.path.join(REPO, "runs", NAME))
  parser.add_argument("--results", action="store_true", help="write into experiments/results")
  parser.add_argument("--num_epochs", type=int, default=0,
                      help="override the config's 50 epochs (40 steps each); 0: keep")
  parser.add_argument("--unfinished", action="store_true",
                      help="no training: add the runs of --seeds/--runs/--inits that were stopped "
                           "before their last step, from their workdir's records so far")
  parser.add_argument("--resummarise", default="",
                      help="no training: re-read the curves of this results JSON and rewrite its "
                           "summary, verdict and figure next to it")
  args = parser.parse_args(argv)
  if args.resummarise:
    with open(args.resummarise) as f:
      results = json.load(f)
    _write(results, os.path.dirname(os.path.abspath(args.resummarise)))
    print(json.dumps({"runs": results["runs"], "verdict": results["verdict"]}, indent=1))
    print(table(results))
    return results
  smoke = "smoke" in args.config.partition(":")[2].split(",")
  # A smoke run checks the pipeline: one init and two runs (each run compiles), unless given.
  if args.runs is None and smoke:
    args.runs = "+".join(SMOKE_RUNS)
  runs = args.runs.split("+") if args.runs else list(_load_config(args.config, "").optimizers)
  inits = (args.inits or ("flax" if smoke else "flax,pytorch")).split(",")
  out = RESULTS if args.results else os.path.join(args.workdir, "out")
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, f"{NAME}.json")
  results = {"layout": LAYOUT, "smoke": smoke, "num_epochs": args.num_epochs or 50,
             "curves": {}}
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if all(previous.get(k) == results[k] for k in ("layout", "smoke", "num_epochs")):
      results = previous
  # A run stopped before its last step (added with --unfinished) is trained again, and its
  # finished curve then replaces the partial one.
  done = {(init, run, c["seed"]) for init, r in results["curves"].items()
          for run, seeds in r.items() for c in seeds if c.get("finished", True)}
  for seed in (int(s) for s in args.seeds.split(",") if s):
    for run in runs:
      for init in inits:
        if (init, run, seed) in done:
          continue
        workdir = os.path.join(args.workdir, init, f"seed{seed}", run)
        if args.unfinished:
          if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
            continue
          curve = read_unfinished(workdir, run)
        else:
          curve = train_one(args.config, seed, run, init, workdir, args.num_epochs)
        seeds_of_run = results["curves"].setdefault(init, {}).setdefault(run, [])
        seeds_of_run[:] = [c for c in seeds_of_run if c["seed"] != seed]
        seeds_of_run.append({"seed": seed, **curve})
        _write(results, out)
  print(json.dumps({"runs": results.get("runs", {}), "verdict": results.get("verdict", {})},
                   indent=1))
  if results.get("runs"):
    print(table(results))
  return results


if __name__ == "__main__":
  main()
