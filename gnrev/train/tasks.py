"""Tasks by name, and the protocol every task implements for the trainer.

``config.task`` names a task (``name`` plus the task's options; a config without ``task`` is
``classification``). Each task's options are the keyword arguments of its builder in
:data:`TASKS`, their defaults read from the signature:

* ``classification``, ``edge_classification``, ``reconstruction``: supervised problems on a
  :class:`gnrev.data.Dataset` (:mod:`gnrev.train.supervised`);
* ``meta_learning``: meta-steps of MAML / TreeMAML over batches of tasks from a task family of
  :mod:`gnrev.meta` (:mod:`gnrev.train.meta_task`).

:func:`gnrev.train.train_and_evaluate` knows tasks only through :class:`Task`: it builds the task
once, loads its data once, checks the config against them once and runs each run's program.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol

import ml_collections

from gnrev.train import meta_task, supervised, validation
from gnrev.train.state import Checked, Program


class Task(Protocol):
  """What the trainer asks of a task (see the module docstring).

  Attributes:
    name: the task's name in :data:`TASKS`.
    run_fields: fields of a run's config that the task owns besides the optimizer's (e.g.
      meta-learning's ``inner``, a supervised run's ``pruning``).
    sections: the config sections the task reads (``data``, ``model``, ``optimizers``...),
      which :func:`gnrev.train.validation.check_config` requires.
    panels: ``(metric, title, yscale)`` of the plot, one per metric.
  """
  name: str
  run_fields: tuple[str, ...]
  sections: tuple[str, ...]
  panels: tuple[tuple[str, str, str], ...]

  def load(self, config: ml_collections.ConfigDict) -> Any:
    """The task's data (e.g. train / validation / test splits, or a task family)."""

  def check(self, config: ml_collections.ConfigDict, data: Any, mesh) -> Checked:
    """Raises ``ValueError`` (naming the field) for anything that could only fail mid-run;
    returns the data with what the checks built (the model, each run's optimizer)."""

  def program(self, config: ml_collections.ConfigDict, run: str, checked: Checked,
              mesh) -> Program:
    """Run ``run``'s :class:`gnrev.train.Program`: initial state, jitted step, batches, eval."""


TASKS: dict[str, Callable[..., Task]] = {
    "classification": supervised.classification,
    "edge_classification": supervised.edge_classification,
    "reconstruction": supervised.reconstruction,
    "meta_learning": meta_task.MetaLearningTask,
}


def task_options(name: str) -> dict[str, Any]:
  """The options of task ``name`` and their defaults, read from its builder's signature."""
  return {p.name: p.default for p in inspect.signature(TASKS[name]).parameters.values()
          if p.default is not inspect.Parameter.empty}


def build_task(config: Any) -> Task:
  """The task of ``config.task`` (``name`` and options), or classification without one.

  Raises:
    ValueError: for an unknown task; :class:`gnrev.train.ConfigError` for an option the task
      does not have ("Did you mean", and the allowed ones) or of the wrong type or range
      (:func:`gnrev.train.validation.check_fields`).
  """
  fields = dict(config.get("task") or {}) if hasattr(config, "get") else {}
  name = fields.pop("name", "classification")
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}.")
  validation.check_fields("task", fields, TASKS[name], f"task {name!r}")
  return TASKS[name](**fields)
