"""GN vs Adam vs SGD on a RevMLP: does exact Gauss-Newton generalise poorly? (issue 7)

Trains every run of ``configs/gn_generalization.py:<finding>`` for each seed with the launcher
(``gnrev.train.train_and_evaluate``: same init, same batches, per-step % loss change on the same
batch, per-epoch checkpoints) and analyses the runs:

1. ``fullbatch``: training loss and accuracy on a fixed subset, one step per epoch (paper Fig. 1).
2. ``minibatch``: train/test loss and test accuracy (Fig. 2), % loss change per update (Fig. 3),
   laziness: sketched NTK similarity to init and between epochs, linear CKA of every block's
   output to init (Fig. 4).
3. ``nobottleneck``: the mini-batch comparison with ``expansion=None`` (Fig. 5), with laziness.
4. ``ablations``: GN's allocation, truncation and damping against the paper's GN and Adam.

Each finding writes ``<out>/gn_generalization_<finding>.json`` (per-epoch means and standard
deviations over seeds, summaries, GN's function-space residual) and ``.png``. ``--out`` defaults
to ``<workdir>/results/<size>`` (so a smoke run never overwrites a full one); the committed
results are updated only on request, with ``--out experiments/results``. One finding can also
be named by its config, ``--config=configs/gn_generalization.py:<finding>[,<size>]``.

  python experiments/gn_generalization.py                          # all findings, digits (~10 min)
  python experiments/gn_generalization.py --config=configs/gn_generalization.py:fullbatch,smoke \
      --workdir=runs/gn_smoke                                       # one finding, seconds
  python experiments/gn_generalization.py --out experiments/results   # refresh committed results
  python experiments/gn_generalization.py --size paper_mnist       # needs MNIST files and a GPU
  python experiments/gn_generalization.py --lr_sweep --findings fullbatch,minibatch   # step sizes
  python experiments/gn_generalization.py --lr_sweep --findings minibatch --size paper_mnist5k \
      --validation_fraction 0.2 --num_epochs 10    # tuned on a validation split, shorter runs
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/jax: no BLAS oversubscription

import argparse
import functools
import json
import math
import time
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from matplotlib.figure import Figure

from gnrev import analysis, data, gn, nets, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "gn_generalization.py")
FINDINGS = ("fullbatch", "minibatch", "nobottleneck", "ablations")
SIZES = ("default", "smoke", "paper_mnist5k", "paper_mnist", "paper_cifar")
PER_STEP_KEYS = ("train_loss", "train_accuracy", "loss_change_pct")
COLOURS = {"exact_gn": "C0", "adam": "C1", "sgd": "C2"}


def finding_config(finding: str, size: str, dataset: str,
                   tuned: bool = False) -> ml_collections.ConfigDict:
  arg = ",".join([finding] + ([size] if size != "default" else []) + [f"dataset={dataset}"]
                 + (["tuned"] if tuned else []))
  return train.load_config(CONFIG, arg)


def train_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[int, list[dict]]:
  """Trains every run for every seed (model init, batches) with the launcher; the records."""
  train_split, _ = train.load_data(config)
  per_epoch = data.steps_per_epoch(len(train_split.y), config.data.batch_size)
  records = {}
  for seed in config.seeds:
    seed_config = ml_collections.ConfigDict(config.to_dict())
    seed_config.seed, seed_config.data.seed = seed, seed
    if config.analysis.laziness:   # a checkpoint per measured epoch (max_to_keep=None)
      seed_config.checkpoint_every = per_epoch * _laziness_every(config)
    else:                          # only the last (the GN residual at the end)
      seed_config.checkpoint_every, seed_config.max_to_keep = config.num_epochs * per_epoch, 1
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    train.train_and_evaluate(seed_config, seed_dir)
    records[seed] = train.read_metrics(seed_dir)
  return records


def epoch_curve(records: list[dict], run: str, key: str) -> np.ndarray:
  """``key`` per epoch (0 = init where logged); NaN where a record lacks it."""
  rows = [r for r in records if r["run"] == run and key in r]
  epochs = max(r["epoch"] for r in records if r["run"] == run)
  curve = np.full(epochs + 1, np.nan)
  for r in rows:
    curve[r["epoch"]] = r[key]
  return curve


def step_curve_by_epoch(records: list[dict], run: str, key: str) -> np.ndarray:
  """The epoch mean of a per-step metric (epochs 1..E)."""
  epochs = max(r["epoch"] for r in records if r["run"] == run)
  sums, counts = np.zeros(epochs + 1), np.zeros(epochs + 1)
  for r in records:
    if r["run"] == run and key in r and r["step"] > 0:
      sums[r["epoch"]] += r[key]
      counts[r["epoch"]] += 1
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def run_curves(records: dict[int, list[dict]], run: str) -> dict[str, list[np.ndarray]]:
  """Per-seed curves of ``run``: train metrics and % loss change for epochs 1..E (means over
  the epoch's steps, pre-step batches), test metrics for epochs 0..E (0: the init)."""
  seeds = list(records)
  return {
      "train_loss": [epoch_curve(records[s], run, "epoch_train_loss")[1:] for s in seeds],
      "train_accuracy": [epoch_curve(records[s], run, "epoch_train_accuracy")[1:] for s in seeds],
      "test_loss": [epoch_curve(records[s], run, "test_loss") for s in seeds],
      "test_accuracy": [epoch_curve(records[s], run, "test_accuracy") for s in seeds],
      "loss_change_pct": [step_curve_by_epoch(records[s], run, "loss_change_pct")[1:]
                          for s in seeds]}


def mean_std(curves: list[np.ndarray]) -> dict:
  stacked = np.stack(curves)
  with warnings.catch_warnings():   # all-NaN columns (e.g. no NTK change at epoch 0) stay NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    return {"mean": np.nanmean(stacked, 0).tolist(), "std": np.nanstd(stacked, 0).tolist()}


def _json_safe(value):
  """NaN and infinities as None, so that the file is strict JSON."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def _laziness_every(config: ml_collections.ConfigDict) -> int:
  """Epochs between laziness measurements (``analysis.every_epochs``, default 1); it must
  divide ``num_epochs`` so that the last epoch is measured."""
  every = int(config.analysis.get("every_epochs", 1))
  if every < 1 or config.num_epochs % every:
    raise ValueError(f"analysis.every_epochs must be a positive divisor of num_epochs="
                     f"{config.num_epochs}; got {every}.")
  return every


def laziness(config: ml_collections.ConfigDict, workdir: str, seed: int, run: str) -> dict:
  """Per-epoch NTK similarity (to init and to the previous epoch) and per-block CKA to init.

  NTK: sketched kernel-vector products ``J J^T v`` of the ``d``-dim hidden output (the paper's
  choice), both the paper's probe-averaged cosine and the Frobenius estimator of the kernel
  cosine. CKA: linear CKA of each block's ``d``-dim output at epoch ``t`` vs init, on the first
  ``probe_examples`` training examples.
  """
  train_split, _ = train.load_data(config)
  x = jnp.asarray(train_split.x[:config.analysis.probe_examples])
  model = train.build_model(config.model, train_split.num_classes).clone(memory_mode="autodiff")
  variables = model.init(jax.random.key(seed), train_split.x[:1])   # the launcher's init
  fixed = {k: v for k, v in variables.items() if k != "params"}
  features = int(np.prod(x.shape[1:]))
  h1, _ = nets.split_sizes(features)
  key = jax.random.key(0)

  def block_outputs(params, fixed, x):
    blocks_params, blocks_fixed, _ = model.apply({"params": params, **fixed}, features,
                                                 method=model.stack_variables)
    flat = nets.flatten_inputs(x)
    y1, y2, outputs = flat[:, :h1], flat[:, h1:], []
    for p, f, activation in zip(blocks_params, blocks_fixed, model.activations):
      y1, y2 = nets.coupling_block(p, f, y1, y2, activation)
      outputs.append(jnp.concatenate([y1, y2], axis=-1))
    return outputs

  # The fixed variables and the probe batch are arguments, not compiled-in constants.
  @jax.jit
  def measure(params, previous, initial, fixed, x, key):
    hidden = lambda p, inputs: model.apply({"params": p, **fixed}, inputs, method=model.hidden)
    ntk = lambda a, b, estimator: analysis.sketched_ntk_similarity(
        hidden, a, b, x, key, config.analysis.num_probes, estimator)
    cka = jnp.stack([analysis.linear_cka(a, b) for a, b in
                     zip(block_outputs(params, fixed, x), block_outputs(initial, fixed, x))])
    return {"ntk_to_init": ntk(params, initial, "frobenius"),
            "ntk_to_init_paper": ntk(params, initial, "paper"),
            "ntk_change": 1.0 - ntk(params, previous, "frobenius"), "cka_to_init": cka}

  directory = os.path.join(workdir, f"seed_{seed}", run, "checkpoints")
  per_epoch = data.steps_per_epoch(len(train_split.y), config.data.batch_size)
  initial = variables["params"]
  # Epoch 0 is the init itself: similarity 1, change 0. Epochs between measurements (every
  # ``analysis.every_epochs``) are NaN; ``ntk_change`` is then the change since the previous
  # measurement.
  every = _laziness_every(config)
  missing = {"ntk_to_init": np.nan, "ntk_to_init_paper": np.nan, "ntk_change": np.nan,
             "cka_to_init": [np.nan] * model.num_blocks}
  out = {"ntk_to_init": [1.0], "ntk_to_init_paper": [1.0], "ntk_change": [np.nan],
         "cka_to_init": [[1.0] * model.num_blocks]}
  previous = initial
  for epoch in range(1, config.num_epochs + 1):
    if epoch % every:
      for name, value in missing.items():
        out[name].append(value)
      continue
    params = jax.tree.map(jnp.asarray, train.load_params(directory, step=epoch * per_epoch))
    for name, value in measure(params, previous, initial, fixed, x, key).items():
      out[name].append(np.asarray(value).tolist())
    previous = params
  # Global only: the per-tensor ratios of the zero-initialised biases are undefined.
  drift = analysis.weight_drift_summary(params, initial)
  out["drift"] = {k: float(drift[k]) for k in ("norm_ratio/global", "cosine/global")}
  return out


def gn_residual(config: ml_collections.ConfigDict, workdir: str, seed: int, run: str) -> dict:
  """``||J D - s t|| / ||s t||`` of GN's direction on the first batch, at init and at the end.

  Shows how inexact the "exact" step is under truncation / rank deficiency (exact_gn notes 4.4).
  """
  opt = config.optimizers[run]
  train_split, _ = train.load_data(config)
  rows = data.batch_indices(len(train_split.y), config.data.batch_size, seed, 0)
  x, y = train_split.x[rows], data.one_hot(train_split.y[rows], train_split.num_classes)
  model = train.build_model(config.model, train_split.num_classes)
  variables = model.init(jax.random.key(seed), train_split.x[:1])
  directory = os.path.join(workdir, f"seed_{seed}", run, "checkpoints")
  final = jax.tree.map(jnp.asarray, train.load_params(directory))
  direction_fn = jax.jit(functools.partial(
      gn.exact_gn_direction, model, loss=opt.loss, allocation=opt.allocation, solver=opt.solver,
      rtol=opt.get("rtol", 0.0), atol=opt.get("atol", 0.0), damping=opt.get("damping", 0.0)))
  out = {}
  for name, params in (("init", variables["params"]), ("final", final)):
    _, info = direction_fn({**variables, "params": params}, x, y)
    out[name] = {"residual": float(info["residual"]),
                 "rank": np.asarray(info["rank"]).tolist(),
                 "min_singular_value": np.asarray(info["min_singular_value"]).tolist()}
  return out


def summarise(curves: dict, final_window: int = 5) -> dict:
  """Final values (mean over the last ``final_window`` epochs, then mean/std over seeds)."""
  summary = {}
  for run, metrics in curves.items():
    summary[run] = {}
    for key, per_seed in metrics.items():
      finals = [np.nanmean(np.asarray(c)[-final_window:]) for c in per_seed]
      summary[run][f"final_{key}"] = {"mean": float(np.mean(finals)), "std": float(np.std(finals))}
    if "test_loss" in metrics:
      best = [float(np.nanmin(c)) for c in metrics["test_loss"]]
      at = [int(np.nanargmin(c)) for c in metrics["test_loss"]]
      summary[run]["min_test_loss"] = {"mean": float(np.mean(best)), "std": float(np.std(best)),
                                       "epoch_per_seed": at}
  return summary


def epochs_to_reach(curves: dict, key: str, threshold: float) -> dict:
  """First epoch at which ``key`` drops below ``threshold``, per seed (None: never)."""
  out = {}
  for run, metrics in curves.items():
    out[run] = [next((int(e) for e, v in enumerate(c) if v < threshold), None)
                for c in metrics[key]]
  return out


def plot(panels: list[tuple[str, str, str]], curves: dict, path: str, title: str) -> None:
  """One panel per (metric, label, yscale); mean over seeds with a min-max band."""
  figure = Figure(figsize=(3.6 * len(panels), 3.0), layout="constrained")
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for axis, (key, label, scale) in zip(axes, panels):
    for index, (run, metrics) in enumerate(curves.items()):
      if key not in metrics:
        continue
      stacked = np.asarray(metrics[key], dtype=float)
      # Per-step metrics summarise epochs 1..E; test metrics and laziness start at the init.
      epochs = np.arange(stacked.shape[1]) + (key in PER_STEP_KEYS)
      colour = COLOURS.get(run, f"C{index + 3}")
      with warnings.catch_warnings():   # all-NaN columns (unmeasured epochs) are not drawn
        warnings.simplefilter("ignore", RuntimeWarning)
        keep = np.isfinite(np.nanmean(stacked, 0))
        epochs, stacked = epochs[keep], stacked[:, keep]
        axis.plot(epochs, np.nanmean(stacked, 0), label=run, color=colour,
                  marker="." if len(epochs) < 20 else None)
        if stacked.shape[0] > 1:
          axis.fill_between(epochs, np.nanmin(stacked, 0), np.nanmax(stacked, 0),
                            color=colour, alpha=0.2, linewidth=0)
    axis.set(title=label, xlabel="epoch", yscale=scale)
    if key.endswith("loss") and axis.get_ylim()[1] > 10:   # a diverged run hides the others
      axis.set_ylim(top=10)
  axes[0].legend(fontsize=7)
  figure.suptitle(title, fontsize=9)
  figure.savefig(path, dpi=80)


def _stem(out: str, finding: str, data_name: str, tuned: bool = False) -> str:
  """``<out>/gn_generalization_<finding>``, plus ``_<data>`` for data other than digits (the
  config's ``data.name``: ``mnist1d``, or ``mnist5k`` / ``mnist`` / ``cifar10`` at paper sizes)
  and ``_tuned`` for the swept step sizes of a paper size."""
  return os.path.join(out, f"gn_generalization_{finding}" +
                      ("" if data_name == "digits" else f"_{data_name}") +
                      _tuned_suffix(tuned))


def _tuned_suffix(tuned: bool) -> str:
  return "_tuned" if tuned else ""


def run_finding(finding: str, size: str, dataset: str, workdir: str, out: str,
                tuned: bool = False) -> dict:
  config = finding_config(finding, size, dataset, tuned)
  start = time.time()
  finding_dir = os.path.join(workdir, f"{finding}_{size}_{config.data.name}" + _tuned_suffix(tuned))
  records = train_seeds(config, finding_dir)
  runs = list(config.optimizers)
  curves = {run: run_curves(records, run) for run in runs}
  result = {"finding": finding, "size": size, "dataset": config.data.name, "tuned": tuned,
            "seeds": list(config.seeds), "protocol": _protocol(config),
            "summary": summarise(curves)}
  for run in runs:
    result["summary"][run]["skipped_steps_per_seed"] = [
        float(np.nansum(step_curve_by_epoch(records[s], run, "skipped"))) for s in config.seeds]
  if finding == "fullbatch":
    result["epochs_to_train_loss_below"] = {
        str(t): epochs_to_reach(curves, "train_loss", t) for t in (0.5, 0.1, 0.01)}
  if config.analysis.laziness:
    for run in runs:
      measured = [laziness(config, finding_dir, s, run) for s in config.seeds]
      for key in ("ntk_to_init", "ntk_to_init_paper", "ntk_change"):
        curves[run][f"laz_{key}"] = [m[key] for m in measured]
      for block in range(config.model.num_blocks):
        curves[run][f"laz_cka_block_{block + 1}"] = [np.asarray(m["cka_to_init"])[:, block]
                                                     for m in measured]
      result["summary"][run]["weight_drift"] = [m["drift"] for m in measured]
  gn_runs = [run for run in runs if config.optimizers[run].name == "exact_gn"]
  result["gn_residual"] = {run: {s: gn_residual(config, finding_dir, s, run)
                                 for s in config.seeds[:1]} for run in gn_runs}
  result["curves"] = {run: {k: mean_std([np.asarray(c, dtype=float) for c in v])
                            for k, v in m.items()} for run, m in curves.items()}
  result["seconds"] = round(time.time() - start, 1)
  stem = _stem(out, finding, config.data.name, tuned)
  _figures(finding, config, curves, stem)
  with open(stem + ".json", "w") as f:
    json.dump(_json_safe(result), f, indent=1)
  return result


def _figures(finding, config, curves, stem):
  name = f"{config.data.name}, RevMLP L={config.model.num_blocks} M={config.model.expansion}, " \
         f"batch {config.data.batch_size}, seeds {list(config.seeds)}"
  if finding == "fullbatch":
    panels = [("train_loss", "train loss (full batch)", "log"),
              ("train_accuracy", "train accuracy", "linear"),
              ("test_loss", "test loss", "log"), ("test_accuracy", "test accuracy", "linear")]
  else:
    panels = [("train_loss", "train loss (epoch mean)", "log"), ("test_loss", "test loss", "log"),
              ("test_accuracy", "test accuracy", "linear"),
              ("loss_change_pct", "% loss change, same batch", "linear")]
  plot(panels, curves, stem + ".png", f"{finding}: {name}")
  if config.analysis.laziness:
    every = _laziness_every(config)
    laz = [("laz_ntk_change", "NTK change per epoch (1 - cos)" if every == 1 else
            f"NTK change per {every} epochs (1 - cos)", "log"),
           ("laz_ntk_to_init", "NTK similarity to init", "linear")]
    laz += [(f"laz_cka_block_{b + 1}", f"CKA to init, block {b + 1}", "linear")
            for b in range(config.model.num_blocks)]
    plot(laz, curves, stem + "_laziness.png", f"laziness ({finding}): {name}")


def _sweep_run_name(run: str, lr: float) -> str:
  """A run name the trainer accepts (no dots or '+'): ``adam_lr0p001``, ``sgd_lr3``."""
  return f"{run}_lr" + f"{lr:g}".replace(".", "p").replace("+", "")


def lr_sweep(finding: str, size: str, dataset: str, workdir: str, out: str,
             validation_fraction: float = 0.0, num_epochs: int = 0) -> dict:
  """Every step size of ``config.lr_grid`` for each base run of the finding, seed 42 only.

  Reports, per step size, the final train loss (full batch: the criterion) and the final and
  best test loss and accuracy. Mini-batch criterion: the final test loss of seed 42 (the
  committed digits sweeps), or, with ``validation_fraction`` > 0, the final loss on that
  fraction of the training split held out by the trainer (``data.validation_fraction``), which
  the comparison then trains on. The reported comparisons use seeds 42, 43 and 44.
  ``num_epochs`` > 0 shortens every run (a cheaper, shorter-horizon sweep).
  """
  config = finding_config(finding, size, dataset)
  use_validation = validation_fraction > 0 and finding != "fullbatch"
  if use_validation:
    config.data.validation_fraction = validation_fraction
  if num_epochs:
    config.num_epochs = num_epochs
  base = {run: config.optimizers[run].to_dict() for run in ("exact_gn", "adam", "sgd")
          if run in config.optimizers}
  config.optimizers = ml_collections.ConfigDict({
      _sweep_run_name(run, lr): {**opt, "learning_rate": lr}
      for run, opt in base.items() for lr in config.lr_grid[run]})
  config.seeds, config.max_to_keep = (config.seeds[0],), 1
  sweep_dir = os.path.join(workdir, f"lr_sweep_{finding}_{size}_{config.data.name}")
  records = train_seeds(config, sweep_dir)
  records = records[config.seeds[0]]
  criterion = ("final_train_loss" if finding == "fullbatch" else
               "final_val_loss" if use_validation else "final_test_loss")
  table = {}
  for run in config.optimizers:
    train_loss = epoch_curve(records, run, "epoch_train_loss")[1:]
    test_loss = epoch_curve(records, run, "test_loss")
    table[run] = {"learning_rate": config.optimizers[run].learning_rate,
                  "final_train_loss": float(np.mean(train_loss[-5:])),
                  "final_test_loss": float(np.mean(test_loss[-5:])),
                  "min_test_loss": float(np.nanmin(test_loss)),
                  "final_test_accuracy": float(np.mean(
                      epoch_curve(records, run, "test_accuracy")[-5:]))}
    if use_validation:
      table[run]["final_val_loss"] = float(np.mean(epoch_curve(records, run, "val_loss")[-5:]))
  best = {}
  for run in base:
    tried = {k: v for k, v in table.items() if k.startswith(f"{run}_lr")}
    finite = {k: v for k, v in tried.items() if math.isfinite(v[criterion])}
    best[run] = tried[min(finite, key=lambda k: finite[k][criterion])]["learning_rate"]
  result = {"finding": finding, "size": size, "dataset": config.data.name, "criterion": criterion,
            "validation_fraction": validation_fraction if use_validation else 0.0,
            "num_epochs": config.num_epochs, "seed": config.seeds[0], "runs": table,
            "best_learning_rate": best}
  with open(_stem(out, finding, config.data.name) + "_lr_sweep.json", "w") as f:
    json.dump(_json_safe(result), f, indent=1)
  return result


def _protocol(config):
  return {"num_epochs": config.num_epochs, "batch_size": config.data.batch_size,
          "train_subset": config.data.train_subset, "model": config.model.to_dict(),
          "optimizers": config.optimizers.to_dict(), "analysis": config.analysis.to_dict()}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="",
                      help="configs/gn_generalization.py:<finding>[,<size>,dataset=D,tuned]: "
                           "that finding at that size (instead of --findings, --size, "
                           "--dataset and --tuned)")
  parser.add_argument("--findings", default=",".join(FINDINGS))
  parser.add_argument("--size", default="default", choices=SIZES)
  parser.add_argument("--dataset", default="digits")
  parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "gn_generalization"))
  # Never experiments/results unless asked: a smoke run must not overwrite the committed results.
  parser.add_argument("--out", default="", help="where the JSON and figures go (default: "
                      "<workdir>/results/<size>; experiments/results to refresh the committed "
                      "results)")
  parser.add_argument("--lr_sweep", action="store_true",
                      help="try config.lr_grid on seed 42 instead of the comparison")
  parser.add_argument("--validation_fraction", type=float, default=0.0,
                      help="--lr_sweep, mini-batch findings: choose by the loss on this "
                           "fraction of the training split instead of the test loss")
  parser.add_argument("--tuned", action="store_true",
                      help="paper_mnist5k: the swept step sizes (config argument 'tuned')")
  parser.add_argument("--num_epochs", type=int, default=0,
                      help="--lr_sweep: epochs per run (0: the config's)")
  args = parser.parse_args(argv)
  if args.config:
    config = train.load_config(*args.config.split(":", 1))
    args.findings, args.size, args.tuned = config.finding, config.size, config.tuned
    if args.size in ("default", "smoke"):
      args.dataset = config.data.name
  args.out = args.out or os.path.join(args.workdir, "results", args.size)
  findings = args.findings.split(",")
  unknown = sorted(set(findings) - set(FINDINGS))
  if unknown:
    raise ValueError(f"Unknown findings {unknown}; allowed: {', '.join(FINDINGS)}.")
  logging.set_verbosity(logging.WARNING)
  os.makedirs(args.out, exist_ok=True)
  results = {}
  for finding in findings:
    if args.lr_sweep:
      results[finding] = lr_sweep(finding, args.size, args.dataset, args.workdir, args.out,
                                  args.validation_fraction, args.num_epochs)
      print(json.dumps({finding: results[finding]["best_learning_rate"]}))
      continue
    results[finding] = run_finding(finding, args.size, args.dataset, args.workdir, args.out,
                                   args.tuned)
    print(json.dumps(_json_safe({finding: {"summary": results[finding]["summary"],
                                           "seconds": results[finding]["seconds"]}})))
  return results


if __name__ == "__main__":
  main()
