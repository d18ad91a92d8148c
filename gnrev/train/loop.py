"""The training loop: one generic trainer for every (model, optimizer, dataset) in a config.

``train_and_evaluate(config, workdir)`` trains one run per entry of ``config.optimizers`` on the
same model, data and seed, so that a single command compares optimizers. Each step forwards the
extra arguments its transform needs (batch, fixed variables, Fisher-vector product, rng) and
measures the paper's "% loss change on the same batch" (shared/notes/exact_gn.md section 2.1).
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gnrev import data
from gnrev.train import checkpoint, metrics, sharding
from gnrev.train.models import MODELS, build_model, cross_entropy
from gnrev.train.optimizers import OptimizerSetup, build_optimizer, optimizer_options

# Sums kept in the train state over the current epoch: loss, accuracy, % loss change.
EPOCH_SUMS = ("train_loss", "train_accuracy", "loss_change_pct")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails at start-up, with the reason, on names or sizes that could only fail mid-run."""
  if config.data.name not in data.DATASETS:
    raise ValueError(f"Unknown dataset {config.data.name!r}; allowed: "
                     f"{', '.join(sorted(data.DATASETS))}.")
  if config.model.name not in MODELS:
    raise ValueError(f"Unknown model {config.model.name!r}; allowed: {', '.join(sorted(MODELS))}.")
  if not config.optimizers:
    raise ValueError("config.optimizers is empty; give at least one run, e.g. {'adam': ...}.")
  for run, opt_config in config.optimizers.items():
    try:
      options = optimizer_options(opt_config)
    except ValueError as e:
      raise ValueError(f"Run {run!r}: {e}") from e
    if options["name"] == "exact_gn":
      _check_exact_gn(config, run, options["solver"])
    if options["name"] == "fishleg" and config.model.get("memory_mode", "autodiff") != "autodiff":
      raise ValueError(f"Run {run!r}: fishleg's Fisher-vector products use jax.jvp, which needs "
                       "--config.model.memory_mode=autodiff.")


def _check_exact_gn(config: ml_collections.ConfigDict, run: str, solver: str) -> None:
  if config.model.name != "revmlp":
    raise ValueError(f"Run {run!r}: exact_gn needs model 'revmlp', got {config.model.name!r}.")
  expansion, batch_size = config.model.get("expansion"), config.data.batch_size
  if solver == "cholesky" and expansion is not None and batch_size > expansion + 1:
    raise ValueError(
        f"Run {run!r}: exact_gn with solver 'cholesky' needs batch_size <= expansion + 1, got "
        f"batch_size={batch_size} and expansion={expansion}: each branch's feature matrix "
        f"[phi(u C), 1] is n x (expansion + 1) and must have full row rank n. Use a smaller "
        f"batch, a larger expansion, or solver 'svd' / 'damped' (inexact; the residual is "
        f"reported).")


def _loss_and_accuracy(model: nn.Module, params, fixed, x, y):
  logits = model.apply({"params": params, **fixed}, x)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(y, -1))
  return cross_entropy(logits, y), accuracy


def make_train_step(model: nn.Module, setup: OptimizerSetup):
  """A jitted ``(state, fixed, x, y) -> (state, step_metrics)``.

  A step whose update or post-step loss is not finite leaves params and optimizer state
  unchanged (``skipped = 1``), so one bad batch never corrupts the run.
  """
  loss_and_accuracy = lambda params, fixed, x, y: _loss_and_accuracy(model, params, fixed, x, y)

  @jax.jit
  def train_step(state, fixed, x, y):
    params = state["params"]
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    (loss, accuracy), grads = jax.value_and_grad(loss_and_accuracy, has_aux=True)(
        params, fixed, x, y)
    extra = setup.extra_args(params, fixed, (x, y), rng)
    updates, opt_state = setup.tx.update(grads, state["opt_state"], params, **extra)
    new_params = optax.apply_updates(params, updates)
    loss_after, _ = loss_and_accuracy(new_params, fixed, x, y)
    finite = jnp.isfinite(loss_after) & jnp.isfinite(optax.tree.norm(updates))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    change = 100.0 * (loss_after - loss) / loss
    step_metrics = {"train_loss": loss, "train_accuracy": accuracy, "loss_change_pct": change,
                    "update_norm": optax.tree.norm(updates), "skipped": 1 - finite}
    new_state = {"params": keep(new_params, params),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "step": state["step"] + 1, "rng": state["rng"],
                 "epoch_sums": state["epoch_sums"] + jnp.stack([loss, accuracy, change])}
    return new_state, step_metrics

  return train_step


def make_eval_step(model: nn.Module):
  """A jitted ``(params, fixed, x, y, mask) -> {name: sum}`` over a padded chunk.

  The sums: ``loss``, ``correct`` and the counts of :func:`metrics.binary_counts` (class 1
  positive; meaningful for two-class datasets).
  """

  @jax.jit
  def eval_step(params, fixed, x, y, mask):
    logits = model.apply({"params": params, **fixed}, x)
    losses = -jnp.sum(y * jax.nn.log_softmax(logits), axis=-1)
    predicted, actual = jnp.argmax(logits, -1), jnp.argmax(y, -1)
    return {"loss": jnp.sum(losses * mask), "correct": jnp.sum((predicted == actual) * mask),
            **metrics.binary_counts(predicted, actual, mask)}

  return eval_step


def evaluate(eval_step, params, fixed, test: data.Dataset, targets: np.ndarray,
             batch_size: int, mesh) -> dict:
  """Test loss and accuracy over the whole split, in fixed-size chunks (one compilation).

  Two-class datasets also get ``test_precision``, ``test_recall`` and ``test_f1`` of class 1
  (``test_loss`` is then the binary cross-entropy).
  """
  sums = {}
  for start in range(0, len(test.y), batch_size):
    rows = np.arange(start, start + batch_size)
    mask = (rows < len(test.y)).astype(np.float32)
    x, y = sharding.shard_rows(mesh, np.minimum(rows, len(test.y) - 1), test.x, targets)
    (m,) = sharding.shard_batch(mesh, mask)
    for name, value in eval_step(params, fixed, x, y, m).items():
      sums[name] = sums.get(name, 0.0) + float(value)
  out = {"test_loss": sums["loss"] / len(test.y), "test_accuracy": sums["correct"] / len(test.y)}
  if test.num_classes == 2:
    out.update({f"test_{k}": v for k, v in metrics.binary_scores(sums).items()})
  return out


def _initial_state(config, model, setup, train: data.Dataset, mesh):
  # Initialised as model.init would, but with the dataset's collections (e.g. the message
  # graph) in place; they then travel in `fixed`, replicated, as an argument of every step.
  _, variables = model.apply(dict(train.variables or {}), train.x[:1],
                             rngs={"params": jax.random.key(config.seed)}, mutable=True)
  params = variables["params"]
  fixed = {k: v for k, v in variables.items() if k != "params"}
  state = {"params": params, "opt_state": setup.tx.init(params), "step": jnp.int32(0),
           "rng": jax.random.key_data(jax.random.key(config.seed + 1)),
           "epoch_sums": jnp.zeros(len(EPOCH_SUMS), jnp.float32)}
  return sharding.replicate(mesh, state), sharding.replicate(mesh, fixed)


def train_run(config: ml_collections.ConfigDict, run: str, train: data.Dataset,
              test: data.Dataset, mesh, workdir: str) -> dict:
  """Trains (or resumes) run ``config.optimizers[run]``; returns its final metrics and params."""
  model = build_model(config.model, train.num_classes)
  setup = build_optimizer(config.optimizers[run], model)
  state, fixed = _initial_state(config, model, setup, train, mesh)
  train_targets = data.one_hot(train.y, train.num_classes)
  test_targets = data.one_hot(test.y, test.num_classes)
  batch_size = config.data.batch_size
  per_epoch = data.steps_per_epoch(len(train.y), batch_size)
  total = config.num_epochs * per_epoch
  eval_every = config.eval_every or per_epoch
  train_step, eval_step = make_train_step(model, setup), make_eval_step(model)
  eval_now = lambda s: evaluate(eval_step, s["params"], fixed, test, test_targets,
                                config.data.eval_batch_size, mesh)
  writer = metrics.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
  is_writer = jax.process_index() == 0

  def write(record):
    if is_writer:
      writer.write({"run": run, **record})

  manager = checkpoint.checkpoint_manager(os.path.join(workdir, run, "checkpoints"),
                                          save_every=config.checkpoint_every,
                                          max_to_keep=config.max_to_keep)
  with manager:
    restored = checkpoint.restore_latest(manager, state)
    state = restored if restored is not None else state
    start = int(state["step"])
    if is_writer:
      writer.truncate_after(run, start)
    if start == 0:
      write({"step": 0, "epoch": 0, **eval_now(state)})
    logging.info("Run %s: steps %d..%d of %d (%d per epoch).", run, start, total, total, per_epoch)
    with metrics.progress_bar(total, start, run) as bar:
      for step in range(start + 1, total + 1):
        rows = data.batch_indices(len(train.y), batch_size, config.data.seed, step - 1)
        x, y = sharding.shard_rows(mesh, rows, train.x, train_targets)
        state, step_metrics = train_step(state, fixed, x, y)
        record = {"step": step, "epoch": (step - 1) // per_epoch + 1}
        if step % config.log_every == 0 or step == total:
          record.update({k: float(v) for k, v in step_metrics.items()})
          bar.set_postfix(loss=f"{record['train_loss']:.4f}",
                          acc=f"{record['train_accuracy']:.3f}")
        if step % per_epoch == 0:
          sums = np.asarray(state["epoch_sums"]) / per_epoch
          record.update({f"epoch_{k}": float(v) for k, v in zip(EPOCH_SUMS, sums)})
          state["epoch_sums"] = jnp.zeros_like(state["epoch_sums"])
        if step % eval_every == 0 or step % per_epoch == 0 or step == total:
          record.update(eval_now(state))
        if len(record) > 2:
          write(record)
        checkpoint.save(manager, step, state, force=step == total)
        bar.update(1)
    manager.wait_until_finished()
  return {"params": state["params"], "step": int(state["step"]), **eval_now(state)}


def load_data(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  """The train split (its first ``train_subset`` examples if > 0: the paper's full batch), test.

  ``config.data.options`` (if present) are the dataset's own options, e.g. sizes and seed.
  """
  data_dir = config.data.data_dir or None
  options = dict(config.data.get("options", {}))
  train = data.load_dataset(config.data.name, "train", data_dir, **options)
  test = data.load_dataset(config.data.name, "test", data_dir, **options)
  if config.data.train_subset:
    train = train._replace(x=train.x[:config.data.train_subset],
                           y=train.y[:config.data.train_subset])
  return train, test


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Trains every run of ``config.optimizers`` and leaves its artefacts in ``workdir``.

  Artefacts: ``config.json``, ``metrics.jsonl`` (one JSON object per logged step, with a
  ``run`` field), ``<run>/checkpoints/`` (orbax) and ``curves.png``. Re-running with the same
  workdir resumes every run from its latest checkpoint.

  Args:
    config: a config from ``configs/`` (see ``configs/default.py`` for the fields).
    workdir: directory for the artefacts; created if missing.

  Returns:
    ``{run: {"params", "step", "test_loss", "test_accuracy"}}`` at the end of each run.

  Example::

    config = load_config("configs/default.py", "smoke")
    results = train_and_evaluate(config, "runs/smoke")   # results["adam"]["test_accuracy"]
  """
  check_config(config)
  mesh = sharding.make_mesh(config.num_devices)
  sharding.check_divisible(config.data.batch_size, mesh, "data.batch_size")
  sharding.check_divisible(config.data.eval_batch_size, mesh, "data.eval_batch_size")
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  train, test = load_data(config)
  results = {run: train_run(config, run, train, test, mesh, workdir)
             for run in config.optimizers}
  if jax.process_index() == 0:
    logging.info("Wrote %s", metrics.save_plots(workdir))
    logging.info("Final: %s", json.dumps({r: {k: v for k, v in m.items() if k != "params"}
                                           for r, m in results.items()}))
  return results
