"""Tasks by name (:data:`TASKS`), and the protocol every task implements for the trainer.

``config.task`` is a task's ``name`` and its options, the keyword arguments of its builder
(a config without ``task`` is ``classification``): the supervised tasks of
:mod:`gnrev.train.supervised` and meta-learning (:mod:`gnrev.train.meta_task`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol

import ml_collections

from gnrev.train import meta_task, supervised, validation
from gnrev.train.configs import ConfigError
from gnrev.train.state import Checked, Program


class Task(Protocol):
  """What the trainer asks of a task.

  Attributes:
    name: the task's name in :data:`TASKS`.
    run_fields: fields of a run's config that the task owns besides the optimizer's (e.g.
      meta-learning's ``inner``, a supervised run's ``pruning``).
    sections: the config sections it reads, which the config checks require.
    panels: ``(metric, title, yscale)`` of the plot, one per metric.
  """
  name: str
  run_fields: tuple[str, ...]
  sections: tuple[str, ...]
  panels: tuple[tuple[str, str, str], ...]

  def load(self, config: ml_collections.ConfigDict) -> Any:
    """The task's data (e.g. train / validation / test splits, or a task family)."""

  def check(self, config: ml_collections.ConfigDict, data: Any, mesh,
            options: dict[str, dict]) -> Checked:
    """Raises ``ValueError`` for what could only fail mid-run; returns the data with what the
    checks built (the model; each run's optimizer, from its checked ``options``)."""

  def program(self, config: ml_collections.ConfigDict, run: str, checked: Checked,
              mesh) -> Program:
    """Run ``run``'s :class:`gnrev.train.Program`."""


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
    ConfigError: for an unknown task, or an option it does not have or of the wrong type.
  """
  fields = dict(config.get("task") or {}) if hasattr(config, "get") else {}
  name = fields.pop("name", "classification")
  if name not in TASKS:
    raise ConfigError(f"config.task: Unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}.")
  validation.check_fields("task", fields, TASKS[name], f"task {name!r}")
  try:
    return TASKS[name](**fields)
  except ValueError as e:
    raise ConfigError(f"config.task: {e}") from e
