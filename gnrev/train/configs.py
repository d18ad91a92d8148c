"""Loading a config file, the launcher's ``--config`` flag and :class:`ConfigError`.

A config file defines ``get_config(arg=None)``; ``--config=configs/X.py:smoke,batch=32`` passes
``"smoke,batch=32"`` as ``arg``. The files of ``configs/`` import their shared fields and helpers
from ``configs/common.py`` (JAX-free: loading a config imports no JAX), so the folder that holds
``configs/`` must be importable: :func:`load_config` and the flag put it on ``sys.path``.
The ``--config`` flag of :func:`define_config_flag` fills each run with every option of its
optimizer (and its default) before the command line's overrides apply, so that
``--config.optimizers.adam.b1=0.5`` works although the file does not spell ``b1`` out; the same
holds for the trainer's optional fields (:data:`TRAINER_DEFAULTS`, e.g.
``--config.data.validation_fraction=0.2``).
"""

from __future__ import annotations

import ast
import collections.abc
import importlib.util
import os
import sys
import typing
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from gnrev.train.optimizers import OPTIMIZERS, OPTIONS


class ConfigError(ValueError):
  """A config, its data or its workdir cannot train; the message says what and what is allowed."""


def _make_configs_importable(path: str) -> None:
  """Puts the folder above ``path``'s folder on ``sys.path`` (``configs/X.py`` imports
  ``configs.common``), wherever the command runs from."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.append(root)


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``, as ``--config=path:arg`` would give it."""
  _make_configs_importable(path)
  spec = importlib.util.spec_from_file_location("gnrev_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _annotation(name: str, option: str) -> Any:
  """The type annotation of option ``option`` of optimizer ``name`` (None if it has none)."""
  try:
    return typing.get_type_hints(OPTIMIZERS[name].factory).get(option)
  except Exception:  # pylint: disable=broad-except  (an annotation that does not resolve)
    return None


def _none_default_type(name: str, option: str) -> type | None:
  """The type a command-line value of an option whose default is None takes: the first of
  float, int, str and bool that its annotation admits (``Optional[float]``; optax's numeric
  unions), else None."""
  kinds = typing.get_args(_annotation(name, option))
  return next((kind for kind in (float, int, str, bool) if kind in kinds), None)


def _takes_a_sequence(name: str, option: str) -> bool:
  """Whether an option is annotated with a sequence among other kinds (exact GN's
  ``allocation``: a name or per-block weights)."""
  return any(typing.get_origin(a) in (collections.abc.Sequence, list, tuple)
             for a in typing.get_args(_annotation(name, option)))


def complete_optimizer_options(config: ml_collections.ConfigDict) -> dict[str, tuple[str, list]]:
  """Adds every run's missing optimizer options, with their defaults, to ``config`` in place.

  Runs with an unknown optimizer name are left alone (the launcher's checks report them).

  Returns:
    ``{run: (optimizer name, [options added])}``, for :func:`drop_options_of_replaced_optimizers`.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict(
    ...     {"optimizers": {"adam": {"name": "adam", "learning_rate": 1e-3}}})
    >>> added = complete_optimizer_options(config)
    >>> config.optimizers.adam.b1, "b1" in added["adam"][1]
    (0.9, True)
  """
  added = {}
  for run, run_config in config.get("optimizers", {}).items():
    name = run_config.get("name") if hasattr(run_config, "get") else None
    if name not in OPTIONS:
      continue
    added[run] = (name, [option for option in OPTIONS[name] if option not in run_config])
    with run_config.unlocked():
      for option in added[run][1]:
        default = OPTIONS[name][option]
        kind = _none_default_type(name, option) if default is None else None
        run_config[option] = ml_collections.config_dict.placeholder(kind) if kind else default
  return added


# The trainer's optional fields (read with their defaults when a config omits them), added by the
# ``--config`` flag so that the command line can set them: ``--config.data.validation_fraction``.
TRAINER_DEFAULTS = {"data": {"validation_fraction": 0.0, "validation_seed": 0}}


def complete_trainer_options(config: ml_collections.ConfigDict) -> None:
  """Adds the missing fields of :data:`TRAINER_DEFAULTS` to ``config``'s sections, in place.

  Example:
    >>> import ml_collections
    >>> config = ml_collections.ConfigDict({"data": {"name": "digits"}})
    >>> complete_trainer_options(config)
    >>> config.data.validation_fraction, config.data.validation_seed
    (0.0, 0)
  """
  for section, fields in TRAINER_DEFAULTS.items():
    if not isinstance(config.get(section), ml_collections.ConfigDict):
      continue
    with config[section].unlocked():
      for field, default in fields.items():
        if field not in config[section]:
          config[section][field] = default


def drop_options_of_replaced_optimizers(config: ml_collections.ConfigDict,
                                        added: dict[str, tuple[str, list]],
                                        overridden: Any) -> None:
  """Removes the options added for an optimizer that ``--config.optimizers.<run>.name`` replaced.

  Options the command line set explicitly (``overridden``: the flag's override paths) stay, so
  that one the new optimizer lacks is reported, not silently dropped.
  """
  for run, (name, options) in added.items():
    run_config = config.optimizers.get(run)
    if run_config is None or run_config.get("name") == name:
      continue
    with run_config.unlocked():
      for option in options:
        if f"optimizers.{run}.{option}" not in overridden:
          del run_config[option]


def parse_sequence_overrides(config: ml_collections.ConfigDict, overridden: Any) -> None:
  """Reads a command-line value of an option that takes a name or a sequence as a sequence.

  The file's default is a name (a string field), so ml_collections keeps
  ``--config.optimizers.gn.allocation=0.7,0.3`` as the string ``"0.7,0.3"``; it becomes the
  tuple ``(0.7, 0.3)``. A value that is not a Python sequence literal stays a name.
  """
  for path in overridden:
    section, run, option = (path.split(".") + ["", ""])[:3]
    run_config = config.get("optimizers", {}).get(run) if section == "optimizers" else None
    if run_config is None or not isinstance(run_config.get(option), str):
      continue
    if run_config.get("name") not in OPTIMIZERS or not _takes_a_sequence(run_config.name, option):
      continue
    try:
      value = ast.literal_eval(run_config[option])
    except (ValueError, SyntaxError):
      continue
    if isinstance(value, (list, tuple)):
      with run_config.unlocked():
        del run_config[option]  # a string field takes no tuple
        run_config[option] = tuple(value)


class _CompletingParser(flags.ArgumentParser):
  """Wraps ml_collections' config-file parser: the loaded config gets every optimizer option."""

  def __init__(self, parser: flags.ArgumentParser):
    self.parser, self.added = parser, {}

  def parse(self, argument: str) -> Any:
    _make_configs_importable(argument.split(":", 1)[0])
    config = self.parser.parse(argument)
    if isinstance(config, ml_collections.ConfigDict):
      complete_trainer_options(config)
      if "optimizers" in config:
        self.added = complete_optimizer_options(config)
    return config

  def flag_type(self) -> str:
    return self.parser.flag_type()


def define_config_flag(name: str = "config", flag_values: flags.FlagValues = flags.FLAGS, *,
                       module_name: str | None = None, **kwargs) -> flags.FlagHolder:
  """``config_flags.DEFINE_config_file`` (locked) whose configs hold every optimizer option.

  ``module_name``: the module whose ``--help`` lists the flag (absl's key of the main module,
  e.g. ``FLAGS.find_module_defining_flag("workdir")``); default: this one. After parsing, call
  :func:`finish_config_flag` (``gnrev.main`` does).
  """
  holder = config_flags.DEFINE_config_file(name, None, "Experiment config file "
                                           "(configs/*.py[:arg], e.g. configs/default.py:smoke).",
                                           flag_values=flag_values, lock_config=True, **kwargs)
  flag_values[name].parser = _CompletingParser(flag_values[name].parser)
  if module_name is not None:
    flag_values.register_flag_by_module(module_name, flag_values[name])
  return holder


def finish_config_flag(name: str = "config",
                       flag_values: flags.FlagValues = flags.FLAGS) -> ml_collections.ConfigDict:
  """The parsed config of :func:`define_config_flag`, without options of replaced optimizers and
  with sequence values of name-or-sequence options read (:func:`parse_sequence_overrides`)."""
  config = flag_values[name].value
  parser = flag_values[name].parser
  overridden = config_flags.get_override_values(flag_values[name])
  drop_options_of_replaced_optimizers(config, getattr(parser, "added", {}), overridden)
  parse_sequence_overrides(config, overridden)
  return config
