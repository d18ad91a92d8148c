"""The launcher's ``--config`` flag: a locked ml_collections config file whose runs hold every
option of their optimizer.

``--config=configs/X.py:arg`` calls the file's ``get_config(arg)``. Before the command line's
overrides apply, the flag adds every optimizer option and trainer field
(:data:`gnrev.train.configs.TRAINER_DEFAULTS`) the file omits, with its default, so that e.g.
``--config.optimizers.adam.b1=0.5`` works.
"""

from __future__ import annotations

import ast
import collections.abc
import typing
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from gnrev.train.configs import TRAINER_DEFAULTS, make_configs_importable
from gnrev.train.optimizers import OPTIMIZERS, OPTIONS


def _annotation(name: str, option: str) -> Any:
  """The annotation of optimizer ``name``'s ``option``, or None."""
  try:
    return typing.get_type_hints(OPTIMIZERS[name].factory).get(option)
  except Exception:  # pylint: disable=broad-except  (an annotation that does not resolve)
    return None


def _none_default_type(name: str, option: str) -> type | None:
  """The first of float, int, str, bool that the option's annotation admits, or None."""
  kinds = typing.get_args(_annotation(name, option))
  return next((kind for kind in (float, int, str, bool) if kind in kinds), None)


def _takes_a_sequence(name: str, option: str) -> bool:
  return any(typing.get_origin(a) in (collections.abc.Sequence, list, tuple)
             for a in typing.get_args(_annotation(name, option)))


def complete_optimizer_options(config: ml_collections.ConfigDict) -> dict[str, tuple[str, list]]:
  """Adds every run's missing optimizer options, with their defaults, to ``config`` in place.

  Skips runs of unknown optimizers; a None default becomes a typed placeholder. Returns
  ``{run: (optimizer name, [added options])}``.

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


def complete_trainer_options(config: ml_collections.ConfigDict) -> None:
  """Adds the missing fields of :data:`TRAINER_DEFAULTS` to ``config``'s sections, in place.

  >>> import ml_collections
  >>> config = ml_collections.ConfigDict({"data": {"name": "digits"}})
  >>> complete_trainer_options(config)
  >>> config.data.validation_fraction, config.data.validation_seed
  (0.0, 0)
  """
  for section, fields in TRAINER_DEFAULTS.items():
    if isinstance(config.get(section), ml_collections.ConfigDict):
      with config[section].unlocked():
        for field, default in fields.items():
          if field not in config[section]:
            config[section][field] = default


def drop_options_of_replaced_optimizers(config: ml_collections.ConfigDict,
                                        added: dict[str, tuple[str, list]],
                                        overridden: Any) -> None:
  """Removes the options added for an optimizer that ``--config.optimizers.<run>.name`` replaced.

  Options in ``overridden`` (set on the command line) stay, so that the checks report them."""
  for run, (name, options) in added.items():
    run_config = config.optimizers.get(run)
    if run_config is None or run_config.get("name") == name:
      continue
    with run_config.unlocked():
      for option in options:
        if f"optimizers.{run}.{option}" not in overridden:
          del run_config[option]


def parse_sequence_overrides(config: ml_collections.ConfigDict, overridden: Any) -> None:
  """Turns an overridden name-or-sequence option's string such as ``"0.7,0.3"`` into a tuple.

  (ml_collections keeps the string, the default being a name.) Other strings stay as they are."""
  for path in overridden:
    section, run, option = (path.split(".") + ["", ""])[:3]
    run_config = config.get("optimizers", {}).get(run) if section == "optimizers" else None
    if (run_config is None or not isinstance(run_config.get(option), str)
        or run_config.get("name") not in OPTIMIZERS
        or not _takes_a_sequence(run_config.name, option)):
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
    make_configs_importable(argument.split(":", 1)[0])
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
  """A locked ``config_flags.DEFINE_config_file`` whose configs hold every optimizer option.

  ``module_name``: the module whose ``--help`` lists the flag (None: this one). After parsing,
  call :func:`finish_config_flag`."""
  holder = config_flags.DEFINE_config_file(name, None, "Experiment config file "
                                           "(configs/*.py[:arg], e.g. configs/default.py:smoke).",
                                           flag_values=flag_values, lock_config=True, **kwargs)
  flag_values[name].parser = _CompletingParser(flag_values[name].parser)
  if module_name is not None:
    flag_values.register_flag_by_module(module_name, flag_values[name])
  return holder


def finish_config_flag(name: str = "config",
                       flag_values: flags.FlagValues = flags.FLAGS) -> ml_collections.ConfigDict:
  """The parsed config of :func:`define_config_flag`, after
  :func:`drop_options_of_replaced_optimizers` and :func:`parse_sequence_overrides`."""
  flag = flag_values[name]
  config, parser, overridden = flag.value, flag.parser, config_flags.get_override_values(flag)
  drop_options_of_replaced_optimizers(config, getattr(parser, "added", {}), overridden)
  parse_sequence_overrides(config, overridden)
  return config
