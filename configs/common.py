"""What every config of ``configs/`` shares; imports only ml_collections, so loading a config
never imports JAX.

A config file defines ``get_config(arg=None)``; ``--config=configs/X.py:smoke,seed=1`` passes
``"smoke,seed=1"`` as ``arg``, which :func:`parse_arg` reads. A config starts from
:func:`trainer_config` (the trainer's own fields) and :func:`data_config`, sets its model and
runs, and shrinks to a run of seconds with :func:`shrink_for_smoke` at ``:smoke``. A variant of
another config imports it (``from configs import treemaml_linear``) and changes what differs.
"""

from __future__ import annotations

import ast

import ml_collections


def trainer_config(**fields) -> ml_collections.ConfigDict:
  """The trainer's top-level fields at their defaults, then ``fields``.

  * ``seed``: the model's initialisation and the optimizer's keys;
  * ``num_epochs``: epochs of every run;
  * ``eval_every``: steps between evaluations (0: once per epoch, and after the last step);
  * ``log_every``: steps between per-step metric records;
  * ``checkpoint_every``: steps between checkpoints (0: once per epoch, and after the last step);
  * ``max_to_keep``: checkpoints kept per run (None: all);
  * ``num_devices``: devices of the data-parallel mesh (0: all).

  Example:
    >>> trainer_config(num_epochs=3).checkpoint_every
    0
  """
  config = ml_collections.ConfigDict({
      "seed": 0, "num_epochs": 1, "eval_every": 0, "log_every": 1, "checkpoint_every": 0,
      "max_to_keep": 2, "num_devices": 0})
  config.update(fields)
  return config


def data_config(name: str, **fields) -> ml_collections.ConfigDict:
  """``config.data`` for dataset ``name`` at the trainer's defaults, then ``fields``.

  * ``data_dir``: where file-backed datasets live (empty: ``$GNREV_DATA_DIR``);
  * ``batch_size``, ``eval_batch_size``: examples per training step and per evaluation chunk;
  * ``train_subset``: train on the first N examples only (0: all; the paper's full batch);
  * ``seed``: the order of the batches.
  """
  config = ml_collections.ConfigDict({
      "name": name, "data_dir": "", "batch_size": 128, "eval_batch_size": 500,
      "train_subset": 0, "seed": 0})
  config.update(fields)
  return config


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


def select_runs(runs: dict, names: str) -> dict:
  """The runs named in ``names`` (``"+"``-separated, e.g. a config argument ``runs=adam+sgd``).

  An empty ``names`` keeps every run.

  Example:
    >>> select_runs({"adam": 1, "sgd": 2, "fishleg": 3}, "sgd+adam")
    {'sgd': 2, 'adam': 1}
  """
  if not names:
    return dict(runs)
  chosen = names.split("+")
  unknown = sorted(set(chosen) - set(runs))
  if unknown:
    raise ValueError(f"Unknown run(s) {', '.join(unknown)}; allowed: {', '.join(runs)}.")
  return {name: runs[name] for name in chosen}


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a supervised config to a run of seconds (big_vision's ``runlocal``), in place:
  one epoch of 4 batches of 32, a RevMLP expansion of at most 64."""
  config.num_epochs = 1
  config.eval_every = 0
  config.checkpoint_every = 0
  config.data.train_subset = 128
  config.data.batch_size = 32
  config.data.eval_batch_size = 64
  if "expansion" in config.model and config.model.expansion is not None:
    config.model.expansion = min(config.model.expansion, 64)
  return config
