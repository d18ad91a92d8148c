"""Helpers for ``configs/*.py``: the colon argument, the smoke shrink and loading a config file.

A config file defines ``get_config(arg=None)``; ``--config=configs/X.py:smoke,batch=32`` passes
``"smoke,batch=32"`` as ``arg``. Launcher configs (trained by ``gnrev.main``) also set
``LAUNCHER = True`` at module level; the smoke test runs every such config with ``:smoke``.
"""

from __future__ import annotations

import ast
import importlib.util

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"smoke,batch=32"`` into options, typed like ``defaults`` (a bare name means True).

  Example:
    >>> options = parse_arg("smoke", smoke=False, batch=128)
    >>> options.smoke, options.batch
    (True, 128)
  """
  options = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; allowed: {', '.join(sorted(defaults))}.")
    kind = type(defaults[key])
    options[key] = True if not value else (kind(ast.literal_eval(value)) if kind is not str
                                          else value)
  return ml_collections.ConfigDict(options)


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a launcher config to a run of seconds (big_vision's ``runlocal``), in place."""
  config.num_epochs = 1
  config.eval_every = 0
  config.checkpoint_every = 4
  config.data.train_subset = 128
  config.data.batch_size = 32
  config.data.eval_batch_size = 64
  if "expansion" in config.model and config.model.expansion is not None:
    config.model.expansion = min(config.model.expansion, 64)
  return config


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``, as ``--config=path:arg`` would give it."""
  spec = importlib.util.spec_from_file_location("gnrev_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()
