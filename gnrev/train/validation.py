"""Start-up checks of a launcher config, its data and its workdir: fail before anything trains.

Every rejected value raises :class:`ConfigError` naming the field, its value and what is allowed.
:func:`check_config` checks each field alone, :func:`check_data` what needs the loaded splits and
:func:`check_resume` that a workdir trained before holds the same experiment. The trainer's own
fields have rule tables below; the fields of models, tasks and dataset options are their
factory's keyword arguments, checked against its signature (:func:`check_fields`); optimizer
options against their registry entry's rules.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import math
import os
import re
import types
import typing
from typing import Any, Callable, Mapping, Sequence, Union

import jax
import numpy as np

from gnrev import data, gn
from gnrev.train import pruning, rules
from gnrev.train.configs import TRAINER_DEFAULTS, ConfigError
from gnrev.train.models import MODELS, build_model
from gnrev.train.optimizers import OPTIMIZERS, OPTIONAL_OPTIMIZERS, OPTIONS, optimizer_options


# The launcher's own fields (``config.X``, ``config.data.X``); every one is required.
TOP_RULES: dict[str, rules.Rule] = {
    "seed": rules.integer(0),
    "num_epochs": rules.integer(1),
    "eval_every": rules.integer(0),           # 0: once per epoch
    "log_every": rules.integer(1),
    "checkpoint_every": rules.integer(0),     # 0: once per epoch
    "max_to_keep": rules.integer(1, optional=True),   # None: keep every checkpoint
    "num_devices": rules.integer(0),          # 0: all
}
DATA_RULES: dict[str, rules.Rule] = {
    "name": rules.choice(lambda: data.DATASETS),
    "data_dir": rules.Rule("str", optional=True),
    "batch_size": rules.integer(1),
    "eval_batch_size": rules.integer(1),
    "train_subset": rules.integer(0),         # 0: every training example
    "seed": rules.integer(0),
}

# The trainer's optional fields of config.data (configs.TRAINER_DEFAULTS).
DATA_OPTIONAL_RULES: dict[str, rules.Rule] = {"options": rules.Rule("custom"),
                                              "validation_fraction": rules.number(),
                                              "validation_seed": rules.integer(0)}
EARLY_STOPPING_MODES = ("min", "max")
EARLY_STOPPING_RULES: dict[str, rules.Rule] = {
    "metric": rules.Rule("str"), "patience": rules.integer(0),
    "mode": rules.choice(EARLY_STOPPING_MODES)}
# The sections of a config besides TOP_RULES' fields (each checked by its reader).
SECTIONS = ("task", "data", "model", "optimizers", "early_stopping", "init_from", "pruning")
# Fields that experiment scripts read (seeds, step-size grids...): the trainer ignores them.
EXPERIMENT_FIELDS = ("analysis", "finding", "lr_grid", "seeds", "size", "tuned")
# Rules that a factory's type annotation cannot say, keyed by "<section>.<field>".
FIELD_RULES: dict[str, rules.Rule] = {
    "task.inner_lrs": rules.Rule("sequence", element=rules.NON_NEGATIVE, non_empty=True),
}

# What the trainer passes to a model besides its config fields (ints of models are sizes: >= 1).
MODEL_ARGUMENTS = ("num_classes", "num_outputs", "parent", "name")

RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
RESERVED_RUN_NAMES = ("config.json", "metrics.jsonl", "curves.png")

# The fields that leave a run's trained state alone: a resumed workdir may get new values of
# these; every other field (and every option of each run present in both) must match.
RESUMABLE_CHANGES = ("num_epochs", "eval_every", "log_every", "checkpoint_every", "max_to_keep",
                     "num_devices", "data.data_dir", "data.eval_batch_size", *EXPERIMENT_FIELDS)
# The trainer's optional fields at their defaults (a config that spells one out at its default
# resumes a workdir whose config.json lacks it).
OPTIONAL_DEFAULTS = {"data": {**TRAINER_DEFAULTS["data"], "options": {}}}


def _error(field: str, value: Any, expected: str) -> ConfigError:
  return ConfigError(rules.not_allowed(f"config.{field}", value, expected))


def _check_field(section: Mapping, prefix: str, key: str, rule: rules.Rule) -> None:
  if key not in section:
    raise ConfigError(f"config.{prefix}{key} is missing; expected {rule.describe()}.")
  if not rule.allows(section[key]):
    raise _error(prefix + key, section[key], rule.describe())


def refuse_unknown(section: str, fields: Mapping, allowed: Sequence[str], owner: str) -> None:
  """Raises :class:`ConfigError` on the first field of ``config.<section>`` not in ``allowed``
  ("Did you mean", and the allowed ones); ``owner`` says what defines them (``"model 'cnn'"``).
  """
  unknown = [key for key in fields if key not in allowed]
  if not unknown:
    return
  prefix = f"config.{section}." if section else "config."
  hint = rules.did_you_mean(unknown[0], allowed, prefix)
  raise ConfigError(f"{prefix}{unknown[0]} is not a field of {owner}.{hint} Allowed: "
                    f"{', '.join(allowed) or 'none'}.")


def annotation_rule(hint: Any, low: int = 0) -> rules.Rule | None:
  """The :class:`Rule` of an annotation (int, float, bool, str, sequences and Optional of
  those; else None); ints are at least ``low``, ints in a sequence (widths) at least 1."""
  args = typing.get_args(hint)
  if typing.get_origin(hint) in (Union, types.UnionType):
    kinds = [a for a in args if a is not type(None)]
    rule = annotation_rule(kinds[0], low) if len(kinds) == 1 else None
    return dataclasses.replace(rule, optional=True) if rule is not None else None
  if hint is bool:
    return rules.BOOL
  if hint is int:
    return rules.integer(low)
  if hint is float:
    return rules.number()
  if hint is str:
    return rules.Rule("str")
  if typing.get_origin(hint) in (collections.abc.Sequence, list, tuple) and args:
    element = annotation_rule(args[0], 1)
    return rules.Rule("sequence", element=element) if element is not None else None
  return None


def _type_hints(factory: Callable) -> dict[str, Any]:
  target = (factory.__init__ if inspect.isclass(factory) and not dataclasses.is_dataclass(factory)
            else factory)
  try:
    return typing.get_type_hints(target)
  except Exception:  # pylint: disable=broad-except  (an annotation that does not resolve)
    return {}


def check_fields(section: str, fields: Mapping, factory: Callable, owner: str, *,
                 exclude: Sequence[str] = (), low: int = 0) -> None:
  """Checks the keyword arguments ``fields`` that ``config.<section>`` passes to ``factory``:
  each is a parameter (besides ``exclude``, the trainer's) of its annotation's type or its
  :data:`FIELD_RULES` entry's."""
  parameters = inspect.signature(factory).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
    refuse_unknown(section, fields, [p for p in parameters if p not in exclude], owner)
  hints = _type_hints(factory)
  for key, value in fields.items():
    rule = FIELD_RULES.get(f"{section}.{key}") or annotation_rule(hints.get(key), low)
    if rule is not None and not rule.allows(value):
      raise _error(f"{section}.{key}", value, f"{rule.describe()} ({owner})")


def _check_finite(tree: Any, field: str) -> None:
  if isinstance(tree, Mapping) or hasattr(tree, "items"):
    for key, value in tree.items():
      _check_finite(value, f"{field}.{key}" if field else str(key))
  elif isinstance(tree, (list, tuple)):
    for i, value in enumerate(tree):
      _check_finite(value, f"{field}[{i}]")
  elif isinstance(tree, (float, np.floating)) and not math.isfinite(tree):
    raise _error(field, tree, "a finite number (every number of a config must be finite)")


def _check_run(config, run: str, opt_config: Any, reserved: tuple[str, ...]) -> dict:
  field = f"optimizers.{run}"
  if not isinstance(run, str) or not RUN_NAME.fullmatch(run) or run in RESERVED_RUN_NAMES:
    raise ConfigError(
        f"config.optimizers has a run named {run!r}; a run's name is a directory of the workdir: "
        f"letters, digits, '_', '-', '.', not starting with '.' or '-', and not one of "
        f"{', '.join(RESERVED_RUN_NAMES)}.")
  if not isinstance(opt_config, Mapping) and not hasattr(opt_config, "items"):
    raise _error(field, opt_config, "a dict with a name and a learning_rate, e.g. "
                 "{'name': 'adam', 'learning_rate': 1e-3}")
  name = opt_config.get("name")
  if name not in OPTIONS and name not in OPTIONAL_OPTIMIZERS:  # those: how to install them
    raise ConfigError(f"Run {run!r}: Unknown optimizer {name!r} (config.{field}.name); allowed: "
                      f"{', '.join(sorted(OPTIONS))}.")
  try:
    options = optimizer_options(opt_config, reserved)
  except ValueError as e:
    raise ConfigError(f"Run {run!r}: {e}") from e
  for option, value in options.items():
    rule = OPTIMIZERS[name].rule(option)
    if option != "name" and rule is not None and not rule.allows(value):
      raise _error(f"{field}.{option}", value, rule.describe() + f" (optimizer {name!r})")
  if name == "exact_gn":
    _check_exact_gn_options(config, field, options)
  return options


def _check_exact_gn_options(config, field: str, options: dict) -> None:
  if config.model.name != "revmlp":
    raise _error("model.name", config.model.name, f"'revmlp' for config.{field} (exact_gn)")
  allocation = options.get("allocation", "full")
  num_blocks = config.model.get("num_blocks")
  if isinstance(allocation, str):
    if allocation not in gn.ALLOCATIONS:
      raise _error(f"{field}.allocation", allocation,
                   f"one of {', '.join(map(repr, gn.ALLOCATIONS))} or {num_blocks} per-block "
                   f"weights")
  elif (not isinstance(allocation, (list, tuple)) or len(allocation) != num_blocks or
        not all(rules.number().allows(w) for w in allocation)):
    raise _error(f"{field}.allocation", allocation,
                 f"one of {', '.join(map(repr, gn.ALLOCATIONS))} or {num_blocks} finite "
                 f"per-block weights (config.model.num_blocks = {num_blocks})")
  if options.get("solver") == "damped" and not options.get("damping", 0) > 0:
    raise _error(f"{field}.damping", options.get("damping"),
                 "a number > 0 with solver 'damped' (damping 0 is the undamped, possibly "
                 "singular, solve: use solver 'cholesky' or 'svd' for it)")


def check_config(config, task) -> dict[str, dict]:
  """Checks every field of ``config`` alone (no data); raises the first :class:`ConfigError`.

  Returns:
    ``{run: options}``: each run's :func:`gnrev.train.optimizer_options`.

  Example:
    >>> import ml_collections
    >>> from gnrev.train import supervised
    >>> check_config(ml_collections.ConfigDict({"seed": 0, "num_epochs": 1, "eval_every": 0,
    ...                                         "log_every": 0}), supervised.classification())
    Traceback (most recent call last):
    ...
    gnrev.train.configs.ConfigError: config.log_every = 0 is not allowed; expected an int >= 1.
  """
  refuse_unknown("", config, [*TOP_RULES, *SECTIONS, *EXPERIMENT_FIELDS], "the config")
  for key, rule in TOP_RULES.items():
    _check_field(config, "", key, rule)
  reserved = reserved_fields(task)
  for section in task.sections:
    if section not in config or not hasattr(config[section], "items"):
      raise ConfigError(f"config.{section} is missing or not a dict (see configs/default.py).")
  if not config.optimizers:
    raise ConfigError("config.optimizers is empty; give at least one run, e.g. "
                      "{'adam': {'name': 'adam', 'learning_rate': 1e-3}}.")
  if "data" in task.sections:
    _check_data_and_model_fields(config)
  options = {run: _check_run(config, run, opt_config, reserved)
             for run, opt_config in config.optimizers.items()}
  _check_early_stopping(config)
  _check_finite(config, "")  # whatever no rule above covers (data options, task families...)
  return options


def reserved_fields(task) -> tuple[str, ...]:
  """Run fields owned by the task (meta-learning's ``inner``) or the trainer's pruning."""
  return tuple(dict.fromkeys((*task.run_fields, *pruning.RUN_FIELDS)))


def early_stopping(config) -> tuple[str, int, str] | None:
  """``(metric, patience, mode)`` of ``config.early_stopping``, or None when it is off."""
  stopping = config.get("early_stopping")
  if not stopping or not stopping.get("patience", 0):
    return None
  return (stopping.get("metric", "val_loss"), int(stopping.patience), stopping.get("mode", "min"))


def _check_early_stopping(config) -> None:
  section = config.get("early_stopping")
  if section is None:
    return
  if not hasattr(section, "items"):
    raise _error("early_stopping", section, "a dict of metric, patience and mode")
  refuse_unknown("early_stopping", section, list(EARLY_STOPPING_RULES), "config.early_stopping")
  for key, rule in EARLY_STOPPING_RULES.items():
    if key in section and not rule.allows(section[key]):
      raise _error(f"early_stopping.{key}", section[key], rule.describe())
  stopping = early_stopping(config)
  if stopping is not None and not stopping[0].startswith("val_"):
    raise ConfigError(f"early_stopping.metric must be a validation metric (val_...), never a "
                      f"test one; got {stopping[0]!r}.")


def _check_data_and_model_fields(config) -> None:
  if config.data.get("name") not in data.DATASETS:
    raise ConfigError(f"Unknown dataset {config.data.get('name')!r} (config.data.name); "
                      f"allowed: {', '.join(sorted(data.DATASETS))}.")
  refuse_unknown("data", config.data, [*DATA_RULES, *DATA_OPTIONAL_RULES], "config.data")
  for key, rule in DATA_RULES.items():
    _check_field(config.data, "data.", key, rule)
  for key, rule in DATA_OPTIONAL_RULES.items():
    if key in config.data and not rule.allows(config.data[key]):
      raise _error(f"data.{key}", config.data[key], rule.describe())
  options = config.data.get("options", None)
  if options is not None and not hasattr(options, "items"):
    raise _error("data.options", options, "a dict of the dataset's own options")
  check_fields("data.options", dict(options or {}), data.DATASETS[config.data.name],
               f"dataset {config.data.name!r}", exclude=("split", "data_dir"))
  if config.model.get("name") not in MODELS:
    raise ConfigError(f"Unknown model {config.model.get('name')!r} (config.model.name); "
                      f"allowed: {', '.join(sorted(MODELS))}.")
  name = config.model.name
  check_fields("model", {k: v for k, v in config.model.items() if k != "name"}, MODELS[name],
               f"model {name!r}", exclude=MODEL_ARGUMENTS, low=1)


def check_data(config, task, train: data.Dataset, test: data.Dataset):
  """Checks what needs the loaded splits of supervised ``task`` (their contents and sizes, the
  model on their shapes and its memory); returns the model, built once for the task's outputs."""
  name = config.data.name
  try:
    for split, dataset in (("train", train), ("test", test)):
      data.check_dataset(dataset, f"dataset {name!r} ({split} split)")
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if train.x.shape[1:] != test.x.shape[1:] or train.num_classes != test.num_classes:
    raise ConfigError(
        f"dataset {name!r}: the train split has examples of shape {train.x.shape[1:]} and "
        f"{train.num_classes} classes, the test split {test.x.shape[1:]} and "
        f"{test.num_classes}; they must match.")
  subset, batch_size = config.data.train_subset, config.data.batch_size
  if subset and len(train.y) < subset:
    raise _error("data.train_subset", subset,
                 f"at most the {len(train.y)} training examples of {name!r} (0: all of them)")
  if batch_size > len(train.y):
    raise _error("data.batch_size", batch_size,
                 f"at most the {len(train.y)} training examples of {name!r}"
                 + (f" (data.train_subset = {subset})" if subset else ""))
  try:  # the module's own checks of its attributes (RevMLP: memory_mode, ...)
    model = build_model(config.model, task.num_outputs(train))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model ({config.model.name!r}): {e}") from e
  check_memory(config, model, train)
  try:  # concretely, on one example: graph models index their inputs on the host
    model.apply(dict(train.variables or {}), train.x[:1], mutable=True,
                rngs={"params": jax.random.key(0)})
  except Exception as e:  # pylint: disable=broad-except  (any failure to build is the config's)
    raise ConfigError(
        f"config.model ({config.model.name!r}) does not fit dataset {name!r} (examples of shape "
        f"{train.x.shape[1:]}, {train.num_classes} classes): {e}") from e
  return model


# Rough float32 bytes per parameter (itself, its gradient, two optimizer moments) and per
# activation of a training example (its value and gradient).
BYTES_PER_PARAMETER, BYTES_PER_ACTIVATION = 16, 8


def available_memory() -> tuple[int, str | None]:
  """``(bytes, device kind)`` of one local accelerator, or ``(the host's RAM, None)``."""
  device = jax.local_devices()[0]
  stats = (device.memory_stats() if device.platform != "cpu" else None) or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), device.device_kind
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None


def _size(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def check_memory(config, model, train: data.Dataset) -> None:
  """Refuses a model or batch whose rough memory need (parameters, and the activations of the
  larger of a training batch and an evaluation chunk per device, counted on shapes) exceeds
  :func:`available_memory`, naming the field to lower. Graph models are not estimated."""
  example = jax.ShapeDtypeStruct((1, *train.x.shape[1:]), train.x.dtype)
  try:
    _, variables = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=True, capture_intermediates=True,
                                 rngs={"params": jax.random.key(0)}),
        dict(train.variables or {}), example)
  except Exception:  # pylint: disable=broad-except  (no estimate; the concrete check follows)
    return
  parameters = _size({k: v for k, v in variables.items() if k != "intermediates"})
  activations = _size(variables.get("intermediates", {})) + math.prod(train.x.shape[1:])
  available, kind = available_memory()
  devices = (config.get("num_devices") or jax.device_count()) if kind else 1  # rows per memory
  batches = {"data.batch_size": -(-config.data.batch_size // devices),
             "data.eval_batch_size": -(-config.data.eval_batch_size // devices)}
  field, rows = max(batches.items(), key=lambda item: item[1])
  need = BYTES_PER_PARAMETER * parameters + BYTES_PER_ACTIVATION * activations * rows
  if need <= available:
    return
  if BYTES_PER_PARAMETER * parameters > BYTES_PER_ACTIVATION * activations * rows:
    sizes = {k: v for k, v in config.model.items() if isinstance(v, int) and
             not isinstance(v, bool)}
    field = f"model.{max(sizes, key=sizes.get)}" if sizes else "model"
  section, _, key = field.partition(".")
  value = config[section][key] if key else config[section]
  raise ConfigError(
      f"config.{field} = {value!r} needs about {need / 2**30:.3g} GiB of memory "
      f"({parameters:.3g} parameters, {activations:.3g} activations per example, batches of "
      f"{rows} rows{' per device' if kind else ''}), more than the {available / 2**30:.3g} GiB "
      f"of {f'one {kind} device' if kind else 'this host'}; lower it.")


def _plain(value: Any) -> Any:
  return json.loads(json.dumps(value, default=lambda v: v.to_dict() if hasattr(v, "to_dict")
                               else list(v) if isinstance(v, tuple) else repr(v)))


def _run_options(run_config: Any) -> Any:
  if isinstance(run_config, Mapping) and run_config.get("name") in OPTIONS:
    return {**OPTIONS[run_config["name"]], **run_config}
  return run_config


def _differences(field: str, before: Any, now: Any) -> list[tuple[str, Any, Any]]:
  if isinstance(before, Mapping) and isinstance(now, Mapping):
    return [d for key in sorted(set(before) | set(now)) for d in _differences(
        f"{field}.{key}" if field else key, before.get(key, "<absent>"),
        now.get(key, "<absent>"))]
  return [] if before == now else [(field, before, now)]


def _with_optional_defaults(config: dict) -> dict:
  config = dict(config)
  for section, defaults in OPTIONAL_DEFAULTS.items():
    if isinstance(config.get(section), Mapping):
      config[section] = {**defaults, **config[section]}
  return config


def _changeable(field: str) -> bool:
  return any(field == f or field.startswith(f + ".") for f in RESUMABLE_CHANGES)


def check_resume(config, workdir: str) -> list[str]:
  """Raises :class:`ConfigError` if ``workdir/config.json`` differs from ``config`` in a field
  outside :data:`RESUMABLE_CHANGES` (each run present in both compared with its optimizer's
  defaults filled in; runs may be added or left out), listing each difference.

  Returns:
    ``"field (before -> now)"`` for each allowed change, for the launch to record.

  Raises:
    FileExistsError: if ``workdir`` is an existing file.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise FileExistsError(f"workdir {workdir!r} exists and is a file; give a directory.")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} is unreadable ({e}); the workdir's runs cannot be checked for "
                      f"compatibility. Use a new --workdir.") from e
  new = _plain(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  saved_runs, new_runs = saved.pop("optimizers", {}), new.pop("optimizers", {})
  differences = _differences("", _with_optional_defaults(saved), _with_optional_defaults(new))
  for run in sorted(set(saved_runs) & set(new_runs)):
    differences += _differences(f"optimizers.{run}", _run_options(saved_runs[run]),
                                _run_options(new_runs[run]))
  refused = [f"{field} ({before!r} in the workdir, {now!r} now)"
             for field, before, now in differences if not _changeable(field)]
  if refused:
    raise ConfigError(
        f"Workdir {workdir!r} holds runs trained with another config; its checkpoints do not fit "
        f"this one. Differing: {'; '.join(refused)}. Use a new --workdir, or the workdir's "
        f"values (see {path}).")
  return [f"{field} ({before!r} -> {now!r})" for field, before, now in differences]
