"""The training loop: one generic trainer for every (task, model, optimizer, dataset) in a config.

``train_and_evaluate(config, workdir)`` trains one run per entry of ``config.optimizers`` on the
same task, model, data and seed, so that a single command compares optimizers. The task
(``config.task``, :mod:`gnrev.train.tasks`; classification by default) gives the loss, targets,
metrics and likelihood; each step forwards the extra arguments its transform needs (batch, fixed
variables, Fisher-vector product, rng) and measures the "% loss change on the same batch": the
loss of the batch after the step relative to before it, the per-step measure of the Gauss-Newton
paper (Buffelli et al. 2024, section 5). Every task's runs share this loop's checkpoints, resume,
``metrics.jsonl``, progress bar, periodic evaluation and early stopping.

Options besides the data, model and optimizers (all optional):

* ``config.eval_every``: steps between evaluations (0: once per epoch);
* ``config.data.validation_fraction`` (default 0) and ``config.data.validation_seed`` (default
  0): a validation split carved from the training split by that seed (never from the test
  split), evaluated as ``val_*`` next to ``test_*``;
* ``config.early_stopping.metric`` (e.g. ``"val_loss"``), ``.patience`` (evaluations without
  improvement before the run stops; 0: off) and ``.mode`` (``"min"`` or ``"max"``): the run
  keeps the parameters of its best evaluation and reports the metrics of those;
* ``config.init_from`` and ``config.pruning`` (or a run's ``pruning``): start from another run's
  checkpoint, prune on a schedule and fine-tune with the masks kept (:mod:`gnrev.train.pruning`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gnrev import data
from gnrev.train import (checkpoint, configs, metrics, pruning, sharding, tasks, validation,
                         workdir as workdir_lib)
from gnrev.train.models import MODELS, build_model
from gnrev.train.optimizers import (OptimizerSetup, build_optimizer, check_optimizer,
                                    optimizer_options)
from gnrev.train.state import BestState, Program, TrainState, keep_if_finite

EARLY_STOPPING_MODES = ("min", "max")


def _run_fields(task) -> tuple[str, ...]:
  return (*getattr(task, "run_fields", ()), *pruning.RUN_FIELDS)


def check_config(config: ml_collections.ConfigDict, splits: Any = None) -> Any:
  """Fails at start-up, with the reason, on anything that could only fail mid-run.

  First the names and options of the config alone (task, dataset, model, optimizers, early
  stopping), then, on the loaded data (``splits``, loaded here if not given), each run's
  optimizer check (:func:`gnrev.train.optimizers.check_optimizer`: e.g. the exact-GN rank
  bounds) and the task's data check. Nothing has been trained or written when it raises.

  Returns:
    The loaded data (what :func:`load_splits` returns), for the trainer to reuse.
  """
  validation.check_config(config)  # every field of every run (gnrev/train/validation.py)
  task = tasks.build_task(config)
  meta = not isinstance(task, tasks.SupervisedTask)
  if not meta:
    if config.data.name not in data.DATASETS:
      raise ValueError(f"Unknown dataset {config.data.name!r}; allowed: "
                       f"{', '.join(sorted(data.DATASETS))}.")
    if config.model.name not in MODELS:
      raise ValueError(f"Unknown model {config.model.name!r}; allowed: "
                       f"{', '.join(sorted(MODELS))}.")
    fraction = _validation_fraction(config)
    if not 0 <= fraction < 1:
      raise ValueError(f"data.validation_fraction must be in [0, 1), got {fraction}.")
  if not config.optimizers:
    raise ValueError("config.optimizers is empty; give at least one run, e.g. {'adam': ...}.")
  for run, opt_config in config.optimizers.items():
    try:
      optimizer_options(opt_config, _run_fields(task))
    except ValueError as e:
      raise ValueError(f"Run {run!r}: {e}") from e
  pruning.check_pruning(config, supervised=not meta)
  stopping = _early_stopping(config)
  if stopping is not None:
    metric, _, mode = stopping
    if mode not in EARLY_STOPPING_MODES:
      raise ValueError(f"early_stopping.mode must be one of {', '.join(EARLY_STOPPING_MODES)}, "
                       f"got {mode!r}.")
    if not metric.startswith("val_"):
      raise ValueError(f"early_stopping.metric must be a validation metric (val_...), never a "
                       f"test one; got {metric!r}.")
    if not meta and _validation_fraction(config) == 0:
      raise ValueError("early_stopping needs a validation split: set "
                       "data.validation_fraction > 0.")
    if meta and not task.num_val_batches:
      raise ValueError("early_stopping needs validation batches of tasks: set "
                       "task.num_val_batches > 0.")
  if splits is None:
    splits = load_splits(config, task)
  if meta:
    for run in config.optimizers:
      task.check_run(config, run, splits)
    return splits
  train, _, test = splits
  task.check_data(train)
  task.check_data(test)
  num_outputs = task.num_outputs(train)
  model = build_model(config.model, num_outputs)
  for run, opt_config in config.optimizers.items():
    try:
      check_optimizer(opt_config, model, task, train.x.shape, config.data.batch_size,
                      _run_fields(task))
    except ValueError as e:
      raise ValueError(f"Run {run!r}: {e}") from e
  total_steps = config.num_epochs * data.steps_per_epoch(len(train.y), config.data.batch_size)
  pruning.check_pruning(config, model=model, example=train.x[:1], total_steps=total_steps)
  return splits


def _data_option(config, field: str):
  """``config.data.<field>``, or its default in :data:`configs.TRAINER_DEFAULTS` if omitted."""
  return config.data.get(field, configs.TRAINER_DEFAULTS["data"][field])


def _validation_fraction(config) -> float:
  return float(_data_option(config, "validation_fraction") or 0.0)


def _early_stopping(config) -> tuple[str, int, str] | None:
  """``(metric, patience, mode)`` of ``config.early_stopping``, or None when it is off."""
  stopping = config.get("early_stopping")
  if not stopping or not stopping.get("patience", 0):
    return None
  return (stopping.get("metric", "val_loss"), int(stopping.patience), stopping.get("mode", "min"))


def make_train_step(model: nn.Module, setup: OptimizerSetup, task: Any = None):
  """A jitted ``(state, fixed, x, y) -> (state, step_metrics)`` for a supervised ``task``.

  ``task`` defaults to classification. A step whose update or post-step loss is not finite
  leaves params and optimizer state unchanged (``skipped = 1``; :func:`keep_if_finite`), so one
  bad batch never corrupts the run. ``state.epoch_sums`` accumulates the loss, the task's step
  metrics and the % loss change.
  """
  task = tasks.classification() if task is None else task

  def loss_and_metrics(params, fixed, x, y):
    outputs = model.apply({"params": params, **fixed}, x)
    return task.loss(outputs, y), task.step_metrics(outputs, y)

  @jax.jit
  def train_step(state: TrainState, fixed, x, y):
    params = state.params
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, step_metrics), grads = jax.value_and_grad(loss_and_metrics, has_aux=True)(
        params, fixed, x, y)
    extra = setup.extra_args(params, fixed, (x, y), rng)
    updates, opt_state = setup.tx.update(grads, state.opt_state, params, **extra)
    new_params = optax.apply_updates(params, updates)
    loss_after, _ = loss_and_metrics(new_params, fixed, x, y)
    update_norm = optax.tree.norm(updates)
    finite = jnp.isfinite(loss_after) & jnp.isfinite(update_norm)
    change = 100.0 * (loss_after - loss) / loss
    named = [step_metrics[k] for k in task.step_metric_names]
    new_state = keep_if_finite(state, finite, params=new_params, opt_state=opt_state)
    new_state = new_state.replace(
        epoch_sums=state.epoch_sums + jnp.stack([loss, *named, change]).astype(jnp.float32))
    out = {"train_loss": loss, **{f"train_{k}": v for k, v in step_metrics.items()},
           "loss_change_pct": change, "update_norm": update_norm, "skipped": 1 - finite}
    return new_state, out

  return train_step


def epoch_sum_names(task: Any) -> tuple[str, ...]:
  """Names of a supervised task's epoch sums (the order of ``state.epoch_sums``)."""
  return ("train_loss", *(f"train_{k}" for k in task.step_metric_names), "loss_change_pct")


def make_eval_step(model: nn.Module, task: Any = None):
  """A jitted ``(params, fixed, x, y, mask) -> {name: sum}`` over a padded chunk.

  The sums are the task's (default classification: ``loss``, ``correct`` and the counts of
  :func:`metrics.binary_counts`, class 1 positive).
  """
  task = tasks.classification() if task is None else task

  @jax.jit
  def eval_step(params, fixed, x, y, mask):
    return task.eval_sums(model.apply({"params": params, **fixed}, x), y, mask)

  return eval_step


def evaluate(eval_step, params, fixed, test: data.Dataset, targets: np.ndarray,
             batch_size: int, mesh, task: Any = None, prefix: str = "test") -> dict:
  """The task's scores over the whole split, in fixed-size chunks (one compilation).

  Classification (the default task): ``test_loss`` and ``test_accuracy``; two-class datasets
  also get ``test_precision``, ``test_recall`` and ``test_f1`` of class 1 (``test_loss`` is
  then the binary cross-entropy). ``prefix`` names the split (``"val"`` for validation).
  """
  task = tasks.classification() if task is None else task
  count = len(targets)
  sums = {}
  for start in range(0, count, batch_size):
    rows = np.arange(start, start + batch_size)
    mask = (rows < count).astype(np.float32)
    x, y = sharding.shard_rows(mesh, np.minimum(rows, count - 1), test.x, targets)
    (m,) = sharding.shard_batch(mesh, mask)
    for name, value in eval_step(params, fixed, x, y, m).items():
      sums[name] = sums.get(name, 0.0) + float(value)
  return {f"{prefix}_{k}": float(v) for k, v in task.scores(sums, test).items()}


def _initial_state(config, model, setup, train: data.Dataset, mesh, task: Any = None):
  # Initialised as model.init would, but with the dataset's collections (e.g. the message
  # graph) in place; they then travel in `fixed`, replicated, as an argument of every step.
  task = tasks.classification() if task is None else task
  _, variables = model.apply(dict(train.variables or {}), train.x[:1],
                             rngs={"params": jax.random.key(config.seed)}, mutable=True)
  params = variables["params"]
  fixed = {k: v for k, v in variables.items() if k != "params"}
  state = TrainState.create(params, setup.tx.init(params), jax.random.key(config.seed + 1),
                            len(epoch_sum_names(task)))
  return sharding.replicate(mesh, state), sharding.replicate(mesh, fixed)


def supervised_program(config: ml_collections.ConfigDict, run: str, task: Any,
                       train: data.Dataset, test: data.Dataset, mesh,
                       val: data.Dataset | None = None) -> Program:
  """The :class:`Program` of run ``run`` of a supervised task (see :mod:`gnrev.train.state`)."""
  model = build_model(config.model, task.num_outputs(train))
  setup = build_optimizer(config.optimizers[run], model, task, _run_fields(task))
  prune_options = pruning.pruning_options(config, run)  # None: the run does not prune
  setup = pruning.wrap_optimizer(prune_options, setup)
  state, fixed = _initial_state(config, model, setup, train, mesh, task)
  state = pruning.init_state(prune_options, pruning.init_params(config, state, setup.tx))
  train_targets, test_targets = task.targets(train), task.targets(test)
  outputs = jax.eval_shape(lambda p, f, x: model.apply({"params": p, **f}, x), state.params,
                           fixed, train.x[:1])
  task.check_outputs(outputs.shape, train_targets.shape)
  batch_size, eval_batch_size = config.data.batch_size, config.data.eval_batch_size
  eval_step = make_eval_step(model, task)
  val_targets = task.targets(val) if val is not None else None

  def evaluate_all(params):
    out = evaluate(eval_step, params, fixed, test, test_targets, eval_batch_size, mesh, task)
    if val is not None:
      out.update(evaluate(eval_step, params, fixed, val, val_targets, eval_batch_size, mesh,
                          task, prefix="val"))
    return out

  def batch(step):
    rows = data.batch_indices(len(train_targets), batch_size, config.data.seed, step - 1)
    return sharding.shard_rows(mesh, rows, train.x, train_targets)

  postfix = ("train_loss", *(f"train_{k}" for k in task.step_metric_names[:1]))
  return Program(state=state, fixed=fixed, step=make_train_step(model, setup, task),
                 batch=batch, evaluate=evaluate_all,
                 steps_per_epoch=data.steps_per_epoch(len(train_targets), batch_size),
                 epoch_sum_names=epoch_sum_names(task), postfix=postfix,
                 after_step=pruning.make_hook(prune_options, model, fixed, task, train,
                                              evaluate_all))


def _improved(value: float, best: float, mode: str) -> bool:
  return value < best if mode == "min" else value > best


def _track_best(state: TrainState, record: dict, step: int, stopping) -> TrainState:
  metric, _, mode = stopping
  if metric not in record:
    raise ValueError(f"early_stopping.metric {metric!r} is not among the evaluated metrics: "
                     f"{', '.join(sorted(record))}.")
  signed = record[metric] if mode == "min" else -record[metric]
  best = state.best
  if step == 0 or _improved(signed, float(best.metric), "min"):
    best = BestState(params=state.params, metric=jnp.float32(signed), step=jnp.int32(step),
                     stale=jnp.int32(0))
  else:
    best = best.replace(stale=best.stale + 1)
  return state.replace(best=best)


def run_program(config: ml_collections.ConfigDict, run: str, program: Program,
                workdir: str) -> dict:
  """Trains (or resumes) one run's program; its records go to ``workdir/metrics.jsonl``.

  Evaluations run every ``config.eval_every`` steps (0: at the end of every epoch) and after
  the last step.

  Returns:
    ``{"params", "step", "trained_steps", "train_seconds", **final metrics}``; with early
    stopping the params and metrics are those of the best evaluation, and ``best_step`` its
    step. ``train_seconds`` is the wall-clock of this call's ``trained_steps`` steps (with
    checkpointing and logging, without the evaluations): a resumed run times only its own.
  """
  per_epoch = program.steps_per_epoch
  total = config.num_epochs * per_epoch
  eval_every = config.eval_every or per_epoch
  stopping = _early_stopping(config)
  state = program.state
  if stopping is not None:
    state = state.replace(best=BestState(params=state.params, metric=jnp.float32(jnp.inf),
                                         step=jnp.int32(0), stale=jnp.int32(0)))
  stopped = lambda s: stopping is not None and int(s.best.stale) >= stopping[1]
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
    start = int(state.step)
    if is_writer:  # from scratch, step 0's evaluation is written again: drop the old one
      writer.truncate_after(run, start if start > 0 else -1)
    if start == 0:
      record = program.evaluate(state.params)
      if stopping is not None:
        state = _track_best(state, record, 0, stopping)
      record = {"step": 0, "epoch": 0, **record}
      if program.after_step is not None:
        state, record = program.after_step(state, 0, record)
      write(record)
    logging.info("Run %s: steps %d..%d of %d (%d per epoch).", run, start, total, total, per_epoch)
    eval_seconds, started = 0.0, time.perf_counter()
    with metrics.progress_bar(total, start, run) as bar:
      for step in range(start + 1, total + 1):
        if stopped(state):
          break
        state, step_metrics = program.step(state, program.fixed, *program.batch(step))
        record = {"step": step, "epoch": (step - 1) // per_epoch + 1}
        if step % config.log_every == 0 or step == total:
          record.update({k: float(v) for k, v in step_metrics.items()})
          bar.set_postfix({k: f"{record[k]:.4g}" for k in program.postfix if k in record})
        if step % per_epoch == 0:
          sums = np.asarray(state.epoch_sums) / per_epoch
          record.update({f"epoch_{k}": float(v) for k, v in zip(program.epoch_sum_names, sums)})
          state = state.replace(epoch_sums=jnp.zeros_like(state.epoch_sums))
        if step % eval_every == 0 or step == total:
          tic = time.perf_counter()
          evaluated = program.evaluate(state.params)
          eval_seconds += time.perf_counter() - tic
          record.update(evaluated)
          if stopping is not None:
            state = _track_best(state, evaluated, step, stopping)
        if program.after_step is not None:
          state, record = program.after_step(state, step, record)
        if len(record) > 2:
          write(record)
        signalled = workdir_lib.stop_requested() is not None  # SIGTERM / Ctrl-C: save, stop
        checkpoint.save(manager, step, state, force=step == total or stopped(state) or signalled)
        bar.update(1)
        if signalled:
          break
      jax.block_until_ready(state)
    timing = {"trained_steps": int(state.step) - start,
              "train_seconds": time.perf_counter() - started - eval_seconds}
    manager.wait_until_finished()
  workdir_lib.raise_if_stopped(run, int(state.step))  # a signal: saved, now stop
  if stopping is None:
    return {"params": state.params, "step": int(state.step), **timing,
            **program.evaluate(state.params)}
  return {"params": state.best.params, "step": int(state.step), **timing,
          "best_step": int(state.best.step), **program.evaluate(state.best.params)}


def train_run(config: ml_collections.ConfigDict, run: str, train: data.Dataset,
              test: data.Dataset, mesh, workdir: str, val: data.Dataset | None = None) -> dict:
  """Trains (or resumes) run ``config.optimizers[run]`` of a supervised task; returns its final
  metrics and params (see :func:`run_program`)."""
  task = tasks.build_task(config)
  program = supervised_program(config, run, task, train, test, mesh, val)
  return run_program(config, run, program, workdir)


def split_validation(train: data.Dataset, fraction: float,
                     seed: int) -> tuple[data.Dataset, data.Dataset | None]:
  """``(train minus validation, validation)``: ``round(fraction * n)`` examples drawn by ``seed``.

  Both keep the training split's order and its variables; ``fraction == 0`` gives no
  validation split (None).
  """
  if not fraction:
    return train, None
  n = len(train.y)
  num_val = int(round(fraction * n))
  if not 0 < num_val < n:
    raise ValueError(f"data.validation_fraction={fraction} of {n} training examples leaves "
                     f"{num_val} for validation and {n - num_val} for training; both need one.")
  chosen = np.zeros(n, bool)
  chosen[np.random.default_rng(seed).permutation(n)[:num_val]] = True
  part = lambda rows: train._replace(x=train.x[rows], y=train.y[rows])
  return part(~chosen), part(chosen)


def _train_and_test(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  data_dir = config.data.data_dir or None
  options = dict(config.data.get("options", {}))
  return (data.load_dataset(config.data.name, "train", data_dir, **options),
          data.load_dataset(config.data.name, "test", data_dir, **options))


def _carve(config: ml_collections.ConfigDict, train: data.Dataset):
  train, val = split_validation(train, _validation_fraction(config),
                                int(_data_option(config, "validation_seed")))
  if config.data.train_subset:
    train = train._replace(x=train.x[:config.data.train_subset],
                           y=train.y[:config.data.train_subset])
  return train, val


def load_data(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  """The train split (its first ``train_subset`` examples if > 0: the paper's full batch), test.

  ``config.data.options`` (if present) are the dataset's own options, e.g. sizes and seed. With
  ``data.validation_fraction`` > 0 the validation examples (:func:`split_validation`) are taken
  out of the train split first (:func:`load_splits` returns them).
  """
  train, test = _train_and_test(config)
  return _carve(config, train)[0], test


def load_splits(config: ml_collections.ConfigDict, task: Any = None):
  """The task's data: ``(train, val, test)`` Datasets (val None without a validation fraction)
  for a supervised task, the task's own (e.g. a task family) otherwise."""
  task = tasks.build_task(config) if task is None else task
  if not isinstance(task, tasks.SupervisedTask):
    return task.load(config)
  train, test = _train_and_test(config)
  train, val = _carve(config, train)
  return train, val, test


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Trains every run of ``config.optimizers`` and leaves its artefacts in ``workdir``.

  Artefacts: ``config.json``, ``metrics.jsonl`` (one JSON object per logged step, with a
  ``run`` field), ``<run>/checkpoints/`` (orbax) and ``curves.png``. Re-running with the same
  workdir resumes every run from its latest checkpoint. Every check of :func:`check_config`
  runs before anything is written.

  Args:
    config: a config from ``configs/`` (see ``configs/default.py`` for the fields).
    workdir: directory for the artefacts; created if missing.

  Returns:
    ``{run: {"params", "step", "test_loss", ...}}`` at the end of each run (the task's test
    metrics; with early stopping those of the best evaluation, and ``best_step``).

  For example, ``train_and_evaluate(load_config("configs/default.py", "smoke"), "runs/smoke")``
  returns ``{"adam": {"test_accuracy": ..., ...}, "exact_gn": ..., "sgd": ...}``
  (``notebooks/quickstart.ipynb`` runs it).
  """
  task = tasks.build_task(config)
  mesh = sharding.make_mesh(config.num_devices)
  if isinstance(task, tasks.SupervisedTask):
    sharding.check_divisible(config.data.batch_size, mesh, "data.batch_size")
    sharding.check_divisible(config.data.eval_batch_size, mesh, "data.eval_batch_size")
  # Everything that can fail is checked before the workdir is touched.
  splits = check_config(config)
  if isinstance(task, tasks.SupervisedTask):
    validation.check_data(config, splits[0], splits[2])
  os.makedirs(workdir, exist_ok=True)
  # One launcher per workdir: process 0 holds its lock from the resume check to the end.
  primary = jax.process_index() == 0
  with workdir_lib.launcher_lock(workdir) if primary else contextlib.nullcontext():
    validation.check_resume(config, workdir)
    return _train_runs(config, workdir, task, splits, mesh)


def _train_runs(config: ml_collections.ConfigDict, workdir: str, task: Any, splits: Any,
                mesh) -> dict[str, dict]:
  """The body of :func:`train_and_evaluate` once every start-up check has passed."""
  results = {}
  for run in config.optimizers:
    if isinstance(task, tasks.SupervisedTask):
      train, val, test = splits
      program = supervised_program(config, run, task, train, test, mesh, val)
    else:
      program = task.program(config, run, splits, mesh)
    # Written once the first run's initial state exists (a launch that fails to build it leaves
    # no config.json to block the corrected command) and before anything of it is saved.
    if not results and jax.process_index() == 0:
      metrics.write_atomically(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2))
    results[run] = run_program(config, run, program, workdir)
  if jax.process_index() == 0:
    logging.info("Wrote %s", metrics.save_plots(workdir, task.panels))
    logging.info("Final: %s", json.dumps({r: {k: v for k, v in m.items() if k != "params"}
                                           for r, m in results.items()}))
  return results
