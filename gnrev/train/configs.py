"""Config files (``configs/X.py`` defines ``get_config(arg=None)``) and :class:`ConfigError`."""

from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections


class ConfigError(ValueError):
  """A config, its data or its workdir cannot train; the message says what and what is allowed."""


def make_configs_importable(path: str) -> None:
  """Puts the folder holding ``configs/`` on ``sys.path``, for ``import configs.common``."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.append(root)


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``, as ``--config=path:arg`` would give it."""
  make_configs_importable(path)
  spec = importlib.util.spec_from_file_location("gnrev_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


# Optional trainer fields; the ``--config`` flag adds them so the command line can set them.
TRAINER_DEFAULTS = {"data": {"validation_fraction": 0.0, "validation_seed": 0}}
