"""Checkpoints with orbax: the one module that knows orbax's API.

A checkpoint holds the whole training state (params, optimizer state, step, rng key and the
running epoch sums), so that a killed run resumes from its last intact checkpoint and ends with
the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


def checkpoint_manager(directory: str, *, save_every: int,
                       max_to_keep: int | None) -> ocp.CheckpointManager:
  """An async ``CheckpointManager`` saving every ``save_every`` steps; close it when done.

  Temporary directories of saves that a kill interrupted are removed when it opens (orbax
  commits a checkpoint by renaming its temporary directory, so they never count as a step).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_every,
                                         enable_async_checkpointing=True, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Any | None:
  """The newest intact checkpoint restored into ``target``'s structure, shapes and shardings.

  A checkpoint that cannot be read (a truncated data file, an empty ``_METADATA``) is skipped
  with a warning naming it and the step used instead, and deleted, so that the resumed run
  saves that step again. Returns None when there is no checkpoint.

  Raises:
    ValueError: if checkpoints exist but none of them can be restored into ``target`` (then
      they are left on disk and the message names the directory).
  """
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
      target)
  steps = sorted(manager.all_steps(), reverse=True)
  unreadable = []
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except  (orbax, TensorStore, JSON, OS errors)
      unreadable.append((step, e))
      continue
    for bad, error in unreadable:
      logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); resuming from step %d "
                      "instead.", bad, manager.directory, type(error).__name__,
                      str(error).splitlines()[0][:200] if str(error) else "", step)
      manager.delete(bad)
    return restored
  if unreadable:
    step, error = unreadable[0]
    raise ValueError(
        f"No checkpoint in {manager.directory} can be restored (steps "
        f"{', '.join(str(s) for s, _ in unreadable)}; step {step}: {type(error).__name__}: "
        f"{str(error).splitlines()[0][:200] if str(error) else ''}). Delete the directory to "
        f"train that run from scratch.") from error
  return None


def checkpoint_steps(directory: str) -> list[int]:
  """The steps of the checkpoints kept in ``directory``, ascending.

  A run keeps every checkpoint with ``config.max_to_keep = None``; with ``checkpoint_every``
  equal to the steps per epoch these are the per-epoch parameters (plus step 1 and the last).
  """
  with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
    return sorted(manager.all_steps())


def load_params(directory: str, step: int | None = None) -> Any:
  """The params of checkpoint ``step`` (default: the latest) in ``directory``, as numpy arrays.

  Any checkpoint loads, whatever the devices and processes that wrote it (e.g. a run over two
  hosts, read on a laptop): its arrays are restored onto one local device, then to the host.
  """
  with ocp.CheckpointManager(os.path.abspath(directory),
                             item_handlers=ocp.StandardCheckpointHandler()) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"No checkpoint in {directory!r}.")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise ValueError(f"No checkpoint for step {step} in {directory!r}; kept steps: "
                       f"{sorted(steps)}.")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step))
    return jax.device_get(manager.restore(step, args=ocp.args.StandardRestore(abstract))["params"])
