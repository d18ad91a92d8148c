"""The training loop: one generic trainer for every task, model, optimizer and dataset.

``train_and_evaluate(config, workdir)`` trains one run per entry of ``config.optimizers`` on the
same task, data and seed, so that a single command compares optimizers. The task
(``config.task``, :mod:`gnrev.train.tasks`; classification by default) is built once; it loads
its data once, checks the config against them once (every check runs before the workdir is
touched) and gives each run a :class:`gnrev.train.Program`: the initial state, the jitted step,
the batches and the evaluation. The loop below is the same for every task: checkpoints and
resume, ``metrics.jsonl``, the progress bar, periodic evaluation and early stopping.

Options besides the task's own (all optional):

* ``config.eval_every``: steps between evaluations (0: once per epoch);
* ``config.checkpoint_every``: steps between checkpoints (0: once per epoch);
* ``config.early_stopping.metric`` (e.g. ``"val_loss"``), ``.patience`` (evaluations without
  improvement before the run stops; 0: off) and ``.mode`` (``"min"`` or ``"max"``): the run
  keeps the parameters of its best evaluation and reports the metrics of those.

The supervised tasks add the data's options (``config.data``, e.g. a validation split) and, per
run, ``init_from`` and ``pruning`` (:mod:`gnrev.train.supervised`, :mod:`gnrev.train.pruning`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gnrev.train import checkpoint, metrics, sharding, tasks, validation, workdir as workdir_lib
from gnrev.train.configs import ConfigError
from gnrev.train.state import BestState, Program, TrainState


@contextlib.contextmanager
def _config_errors():
  """Re-raises a check's ``ValueError`` as the :class:`ConfigError` it is."""
  try:
    yield
  except ValueError as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(str(e)) from e


def _build_task(config: ml_collections.ConfigDict) -> tasks.Task:
  try:
    return tasks.build_task(config)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"config.task: {e}") from e


def check_fields(config: ml_collections.ConfigDict) -> tasks.Task:
  """Checks every field of ``config`` alone (no data loaded); returns its task.

  What the launcher runs before anything reads the config (e.g. the batch size it logs).

  Raises:
    ConfigError: for every rejected value.
  """
  with _config_errors():
    task = _build_task(config)
    validation.check_config(config, task)
    return task


def _check(config: ml_collections.ConfigDict, task: tasks.Task, data: Any = None):
  """``(mesh, checked)`` after every check of :func:`check_config`."""
  validation.check_config(config, task)
  mesh = sharding.make_mesh(config.num_devices)
  return mesh, task.check(config, task.load(config) if data is None else data, mesh)


def check_config(config: ml_collections.ConfigDict, data: Any = None) -> Any:
  """Fails at start-up, with the reason, on anything that could only fail mid-run.

  First every field of the config alone (:func:`gnrev.train.validation.check_config`), then,
  on the loaded data (``data``, loaded here if not given), the task's own checks (e.g. the
  model on the data's shapes, each run's optimizer: the exact-GN rank bounds). Nothing has been
  trained or written when it raises.

  Returns:
    The task's :class:`gnrev.train.state.Checked`: the loaded data (what :func:`load_splits`
    returns) and what the checks built from it (the model, each run's optimizer), for reuse.

  Raises:
    ConfigError: for every rejected value (a check's ``ValueError`` becomes one).
  """
  with _config_errors():
    return _check(config, _build_task(config), data)[1]


def load_splits(config: ml_collections.ConfigDict, task: tasks.Task | None = None) -> Any:
  """The data of ``config``'s task (``task``, if already built): ``(train, val, test)`` splits
  of a supervised task (val None without a validation fraction), a meta-learning task's family
  and held-out keys."""
  return (tasks.build_task(config) if task is None else task).load(config)


def _track_best(state: TrainState, record: dict, step: int, stopping) -> TrainState:
  metric, _, mode = stopping
  if metric not in record:
    raise ValueError(f"early_stopping.metric {metric!r} is not among the evaluated metrics: "
                     f"{', '.join(sorted(record))}.")
  signed = record[metric] if mode == "min" else -record[metric]
  best = state.best
  if step == 0 or signed < float(best.metric):
    best = BestState(params=state.params, metric=jnp.float32(signed), step=jnp.int32(step),
                     stale=jnp.int32(0))
  else:
    best = best.replace(stale=best.stale + 1)
  return state.replace(best=best)


def run_program(config: ml_collections.ConfigDict, run: str, program: Program,
                workdir: str) -> dict:
  """Trains (or resumes) one run's program; its records go to ``workdir/metrics.jsonl``.

  Evaluations run every ``config.eval_every`` steps and checkpoints are saved every
  ``config.checkpoint_every`` steps (each 0: at the end of every epoch), and both after the last
  step.

  Returns:
    ``{"params", "step", "trained_steps", "train_seconds", **final metrics}``; with early
    stopping the params and metrics are those of the best evaluation, and ``best_step`` its
    step. ``train_seconds`` is the wall-clock of this call's ``trained_steps`` steps (with
    checkpointing and logging, without the evaluations): a resumed run times only its own.
  """
  per_epoch = program.steps_per_epoch
  total = config.num_epochs * per_epoch
  eval_every = config.eval_every or per_epoch
  stopping = validation.early_stopping(config)
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
                                          save_every=config.checkpoint_every or per_epoch,
                                          max_to_keep=config.max_to_keep)
  with manager:
    restored = checkpoint.restore_latest(manager, state)
    state = restored if restored is not None else state
    start = int(state.step)
    if restored is not None:
      logging.info("Run %s: resumed from step %d of %d (checkpoint in %s).", run, start, total,
                   manager.directory)
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
  with _config_errors():  # everything that can fail, before the workdir is touched
    task = _build_task(config)
    mesh, checked = _check(config, task)
    validation.check_resume(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  # One launcher per workdir: process 0 holds its lock from here to the end, and checks the
  # resume again under it (a launcher that held it before may have written config.json since).
  primary = jax.process_index() == 0
  with workdir_lib.launcher_lock(workdir) if primary else contextlib.nullcontext():
    with _config_errors():
      changes = validation.check_resume(config, workdir)
    if changes:  # config.json records the new values once the first state is built
      logging.info("Resuming %s with changed fields that leave the trained state alone: %s",
                   workdir, "; ".join(changes))
    return _train_runs(config, workdir, task, checked, mesh)


def _train_runs(config: ml_collections.ConfigDict, workdir: str, task: Any, checked: Any,
                mesh) -> dict[str, dict]:
  """The body of :func:`train_and_evaluate` once every start-up check has passed."""
  results = {}
  for run in config.optimizers:
    program = task.program(config, run, checked, mesh)
    # Written once the first run's initial state exists (a launch that fails to build it leaves
    # no config.json to block the corrected command) and before anything of it is saved.
    if not results and jax.process_index() == 0:
      metrics.write_atomically(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2))
    results[run] = run_program(config, run, program, workdir)
  if jax.process_index() == 0:
    logging.info("Wrote %s", metrics.save_plots(workdir, task.panels, title=_plot_title(config)))
    for line in metrics.final_table(results):
      logging.info("%s", line)
  return results


def _plot_title(config: ml_collections.ConfigDict) -> str:
  """What the runs of ``config`` trained: the data set (or task family) and the model."""
  task = config.get("task") or {}
  if task.get("name") == "meta_learning":
    family = task.get("family") or {}
    return (f"meta-learning on {family.get('name', 'hierarchical_regression')} "
            f"({family.get('kind', 'tasks')}), model {task.get('model', 'linear')}")
  return f"{config.data.name}, model {config.model.name}"
