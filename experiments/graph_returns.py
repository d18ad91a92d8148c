"""Return prediction on the customer-variant graph: does the graph model beat per-event models?

Trains :class:`gnrev.graphs.BipartiteGNN`, an MLP and logistic regression
(:mod:`gnrev.graphs.tabular`) on the same events over several seeds, reports the held-out
precision / recall / F1 / cross-entropy table of McGowan et al. (arXiv 2302.14096, Table 2) and
compares FishLeg with Adam on the GNN. Config and runbook: ``configs/graph_returns.py``.

Single runs (one model, one seed, fixed number of epochs) also go through the launcher:
``configs/graph_returns_launcher.py``. This script keeps a loop of its own for what the launcher
does not do: several seeds and datasets per command, early stopping on the validation split's
cross-entropy and the summary table. It reuses the launcher's optimizer registry unchanged:
:class:`gnrev.graphs.TwoClassLogits` presents a binary edge model as a two-class softmax
classifier whose inputs are a pytree ``(graph, events...)``, so every registry entry (Adam,
FishLeg's Fisher-vector products, Gauss-Newton's batch) works on it as on any launcher model,
and the graph travels as a jit argument, never a closed-over constant.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from gnrev import graphs
from gnrev.data import graph_returns
from gnrev.train import build_optimizer, cross_entropy

METRICS = ("precision", "recall", "f1", "cross_entropy")
EVAL_CHUNK = 1024


def edge_model(name: str, model_config: Any) -> tuple[graphs.TwoClassLogits, Callable]:
  """The model ``name`` (``logreg``, ``mlp``, ``gnn``) and ``(shared, events) -> inputs``.

  ``shared`` is what all queries read (the message graph, or the events' tabular features);
  the selector picks a batch of events' inputs from it inside jit.
  """
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in dict(model_config).items()}
  if name == "gnn":
    return graphs.TwoClassLogits(graphs.BipartiteGNN(**fields)), lambda graph, events: (
        graph, graph.customer[events], graph.variant[events], graph.event_features[events])
  if name in ("logreg", "mlp"):
    return graphs.TwoClassLogits(graphs.MLPClassifier(**fields)), lambda table, events: (
        table[events],)
  raise ValueError(f"Unknown model {name!r}; allowed: gnn, logreg, mlp.")


def shared_inputs(name: str, data: graph_returns.GraphReturns):
  """The message graph over all events (labels dropped) for the GNN, else the tabular features."""
  if name == "gnn":
    return graphs.message_graph(data)
  return jnp.asarray(graphs.tabular_features(data))


def make_steps(model: graphs.TwoClassLogits, select: Callable, setup):
  """Jitted train step ``(params, opt_state, shared, labels, events, rng)`` and evaluation."""

  def loss_fn(params, inputs, targets):
    return cross_entropy(model.apply({"params": params}, inputs), targets)

  @jax.jit
  def train_step(params, opt_state, shared, labels, events, rng):
    inputs = select(shared, events)
    targets = jax.nn.one_hot(labels[events], 2)
    loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
    extra = setup.extra_args(params, {}, (inputs, targets), rng)
    updates, opt_state = setup.tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def edge_logits(params, shared, events):
    return model.apply({"params": params}, select(shared, events))[:, 1]

  def evaluate(params, shared, labels, events):
    # Padded to a multiple of EVAL_CHUNK so the validation and test splits share a compilation.
    padded = np.resize(events, -(-len(events) // EVAL_CHUNK) * EVAL_CHUNK)
    logits = edge_logits(params, shared, jnp.asarray(padded))[:len(events)]
    return graphs.binary_classification_metrics(logits, labels[events])

  return train_step, evaluate


def train_run(run: str, seed: int, data: graph_returns.GraphReturns,
              split: graph_returns.EventSplit, config: ml_collections.ConfigDict) -> dict:
  """Trains run ``"<model>/<optimizer>"``; early-stops on validation cross-entropy.

  Returns:
    Curves (step, training seconds, mean train loss since the last evaluation, validation
    cross-entropy and F1), the best step and the test and validation metrics at it.
  """
  model_name, optimizer = run.split("/")
  model, select = edge_model(model_name, config.models[model_name])
  setup = build_optimizer(config.optimizers[optimizer], model)
  shared, labels = shared_inputs(model_name, data), jnp.asarray(data.returned)
  params = model.init(jax.random.key(seed), select(shared, jnp.zeros(1, jnp.int32)))["params"]
  opt_state = setup.tx.init(params)
  train_step, evaluate = make_steps(model, select, setup)
  rng = np.random.default_rng(seed)
  keys = jax.random.split(jax.random.key(seed + 1), config.num_steps)
  draw = lambda: jnp.asarray(rng.choice(split.train, config.batch_size))
  jax.block_until_ready(train_step(params, opt_state, shared, labels, draw(), keys[0]))

  def record(step, seconds, losses):
    metrics = {k: float(v) for k, v in evaluate(params, shared, labels, split.val).items()}
    curves["step"].append(step)
    curves["time"].append(seconds)
    curves["train_loss"].append(float(np.mean(losses)) if losses else None)
    curves["val_cross_entropy"].append(metrics["cross_entropy"])
    curves["val_f1"].append(metrics["f1"])
    return metrics

  curves = {"step": [], "time": [], "train_loss": [], "val_cross_entropy": [], "val_f1": []}
  best = {"step": 0, "params": params, "val": record(0, 0.0, [])}
  seconds, stale, step = 0.0, 0, 0
  while step < config.num_steps and stale < config.patience:
    losses = []
    tic = time.perf_counter()
    for step in range(step + 1, min(step + config.eval_every, config.num_steps) + 1):
      params, opt_state, loss = train_step(params, opt_state, shared, labels, draw(),
                                           keys[step - 1])
      losses.append(loss)
    seconds += time.perf_counter() - tic + _wait(losses)
    metrics = record(step, seconds, [float(loss) for loss in losses])
    if metrics["cross_entropy"] < best["val"]["cross_entropy"]:
      best, stale = {"step": step, "params": params, "val": metrics}, 0
    else:
      stale += 1
  test_metrics = evaluate(best["params"], shared, labels, split.test)
  return {"curves": curves, "best_step": best["step"], "stopped_step": step,
          "train_seconds": seconds, "val": best["val"],
          "test": {k: float(v) for k, v in test_metrics.items()}}


def _wait(arrays) -> float:
  """Seconds spent waiting for ``arrays`` to be computed (dispatch is asynchronous)."""
  tic = time.perf_counter()
  jax.block_until_ready(arrays)
  return time.perf_counter() - tic


def datasets(config: ml_collections.ConfigDict, seed: int):
  """``{name: (data, split)}`` for one seed: the synthetic graph, and the real one if present."""
  def prepared(data):
    split = graph_returns.split_events(data.num_events, config.data.fractions, seed=seed)
    return graph_returns.standardize_features(data, split.train), split

  out = {"synthetic": prepared(graph_returns.synthetic_graph_returns(
      seed, **config.data.synthetic))}
  if config.data.data_dir and os.path.exists(os.path.join(config.data.data_dir, "events.csv")):
    out["graph_returns"] = prepared(graph_returns.load_graph_returns(config.data.data_dir))
  return out


def mean_std(values) -> dict:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def first_reaching(curves: dict, target: float) -> tuple[int | None, float | None]:
  """Step and training seconds at which the validation cross-entropy first gets <= ``target``."""
  hits = np.nonzero(np.asarray(curves["val_cross_entropy"]) <= target)[0]
  if not len(hits):
    return None, None
  return curves["step"][hits[0]], curves["time"][hits[0]]


def summarise(results: dict) -> dict:
  """The test table (mean and std over seeds), GNN-vs-per-event gaps and FishLeg vs Adam.

  FishLeg vs Adam: per seed, the target is the worse of the two runs' best validation
  cross-entropies (a level both reach); each run's step and seconds to first reach it.
  """
  summary = {}
  for dataset, runs in results.items():
    table = {run: {**{m: mean_std([r["test"][m] for r in seeds]) for m in METRICS},
                   "best_step": mean_std([r["best_step"] for r in seeds])}
             for run, seeds in runs.items()}
    entry = {"table": table}
    per_event = [r for r in ("logreg/adam", "mlp/adam", "mlp/gauss_newton") if r in runs]
    if "gnn/adam" in runs and per_event:
      best_f1 = max(per_event, key=lambda r: table[r]["f1"]["mean"])
      best_ce = min(per_event, key=lambda r: table[r]["cross_entropy"]["mean"])
      entry["gnn_vs_best_per_event"] = {
          "f1_gain": table["gnn/adam"]["f1"]["mean"] - table[best_f1]["f1"]["mean"],
          "best_per_event_f1_run": best_f1,
          "cross_entropy_drop": (table[best_ce]["cross_entropy"]["mean"] -
                                 table["gnn/adam"]["cross_entropy"]["mean"]),
          "best_per_event_cross_entropy_run": best_ce}
    if "gnn/adam" in runs and "gnn/fishleg" in runs:
      entry["fishleg_vs_adam_gnn"] = [_race(a, f) for a, f in zip(runs["gnn/adam"],
                                                                  runs["gnn/fishleg"])]
    summary[dataset] = entry
  return summary


def _race(adam: dict, fishleg: dict) -> dict:
  target = max(adam["val"]["cross_entropy"], fishleg["val"]["cross_entropy"])
  out = {"target_val_cross_entropy": target}
  for name, run in (("adam", adam), ("fishleg", fishleg)):
    out[f"{name}_steps"], out[f"{name}_seconds"] = first_reaching(run["curves"], target)
    out[f"{name}_seconds_per_step"] = run["train_seconds"] / max(run["stopped_step"], 1)
  return out


def plot(results: dict, summary: dict, path: str) -> None:
  """GNN validation loss vs steps and seconds (Adam vs FishLeg) and the synthetic test table."""
  from matplotlib.figure import Figure
  figure = Figure(figsize=(13, 3.6), layout="constrained")
  by_step, by_time, bars = figure.subplots(1, 3)
  runs = results["synthetic"]
  for color, run in enumerate(r for r in ("gnn/adam", "gnn/fishleg") if r in runs):
    for i, seed_run in enumerate(runs[run]):
      curves = seed_run["curves"]
      for axis, x in ((by_step, "step"), (by_time, "time")):
        axis.plot(curves[x], curves["val_cross_entropy"], color=f"C{color}", lw=1,
                  label=run if i == 0 else None)
  for axis, xlabel in ((by_step, "step"), (by_time, "training seconds")):
    axis.set(xlabel=xlabel, ylabel="validation cross-entropy", title="GNN: Adam vs FishLeg")
  by_step.legend()
  table = summary["synthetic"]["table"]
  names = list(table)
  width = 0.8 / len(METRICS)
  for k, metric in enumerate(METRICS):
    bars.bar(np.arange(len(names)) + k * width, [table[n][metric]["mean"] for n in names], width,
             yerr=[table[n][metric]["std"] for n in names], label=metric)
  bars.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=8, rotation=20)
  bars.set(title="synthetic graph, test (mean, std over seeds)")
  bars.legend(fontsize=7)
  figure.savefig(path, dpi=80)


def run_experiment(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Every run of ``config.runs`` on every dataset and seed; writes JSON and PNG to ``workdir``.

  Returns:
    The summary (see :func:`summarise`).
  """
  results = {}
  for seed in config.seeds:
    for dataset, (data, split) in datasets(config, seed).items():
      for run in config.runs:
        results.setdefault(dataset, {}).setdefault(run, []).append(
            train_run(run, seed, data, split, config))
  summary = summarise(results)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "graph_returns.json"), "w") as f:
    json.dump({"config": config.to_dict(), "summary": summary, "results": results}, f,
              indent=1, default=list)
  plot(results, summary, os.path.join(workdir, "graph_returns.png"))
  return summary


_CONFIG = config_flags.DEFINE_config_file("config", "configs/graph_returns.py",
                                          "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/graph_returns", "Output directory.")


def main(argv):
  del argv
  print(json.dumps(run_experiment(_CONFIG.value, _WORKDIR.value), indent=1))


if __name__ == "__main__":
  app.run(main)
