"""The training loop: one trainer for every task, model, optimizer and dataset.

``train_and_evaluate(config, workdir)`` trains one run per entry of ``config.optimizers`` on the
same task, data and seed. It builds the task (:mod:`gnrev.train.tasks`) once, loads its data
once and checks everything once, before the workdir is touched; then each run's
:class:`gnrev.train.Program` goes through the same loop: checkpoints and resume,
``metrics.jsonl``, progress, evaluation every ``config.eval_every`` steps and a checkpoint every
``config.checkpoint_every`` (0: once per epoch), and early stopping on a validation metric
(``config.early_stopping``: ``metric``, ``patience``, ``mode``), which keeps the best parameters.
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

from gnrev.train import (checkpoint, distributed, metrics, sharding, tasks, validation,
                         workdir as workdir_lib)
from gnrev.train.configs import ConfigError
from gnrev.train.state import BestState, Program, TrainState


@contextlib.contextmanager
def _config_errors():
  """Re-raises a check's ``ValueError`` as the :class:`ConfigError` it is."""
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _checked(config: ml_collections.ConfigDict, data: Any = None):
  """``(task, mesh, checked)`` once every check of :func:`check_config` has passed."""
  with _config_errors():
    task = tasks.build_task(config)
    options = validation.check_config(config, task)
    mesh = sharding.make_mesh(config.num_devices)
    return task, mesh, task.check(config, task.load(config) if data is None else data, mesh,
                                  options)


def check_config(config: ml_collections.ConfigDict, data: Any = None) -> Any:
  """Fails, with the reason, on anything that could only fail mid-run: every field alone, then
  the task's checks on the loaded data (``data``, loaded here if not given).

  Returns:
    The task's :class:`gnrev.train.state.Checked`: the data and what the checks built from it
    (the model, each run's optimizer).

  Raises:
    ConfigError: for every rejected value (a check's ``ValueError`` becomes one).
  """
  return _checked(config, data)[2]


def load_splits(config: ml_collections.ConfigDict, task: tasks.Task | None = None) -> Any:
  """The data of ``config``'s task: ``(train, val, test)`` of a supervised one (val None without
  a validation fraction), a meta-learning task's family and held-out keys."""
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

  Returns:
    ``{"params", "step", "trained_steps", "train_seconds", **final metrics}`` (with early
    stopping: of the best evaluation, and its ``best_step``). ``train_seconds`` times this
    call's steps without the evaluations.
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
  """Trains every run of ``config.optimizers`` (a config of ``configs/``) into ``workdir``:
  ``config.json``, ``metrics.jsonl`` (a JSON record per logged step), ``<run>/checkpoints/`` and
  ``curves.png``. The same workdir again resumes every run from its latest checkpoint.

  Returns:
    ``{run: {"params", "step", "test_loss", ...}}``, as :func:`run_program`.
  """
  task, mesh, checked = _checked(config)  # everything that can fail, before the workdir
  with _config_errors():
    validation.check_resume(config, workdir)
  distributed.log_layout(mesh, getattr(config.get("data"), "batch_size", None))
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
  task = config.get("task") or {}
  if task.get("name") == "meta_learning":
    family = task.get("family") or {}
    return (f"meta-learning on {family.get('name', 'hierarchical_regression')} "
            f"({family.get('kind', 'tasks')}), model {task.get('model', 'linear')}")
  return f"{config.data.name}, model {config.model.name}"
