"""Checkpoints with orbax: the one module that knows orbax's API.

A checkpoint holds the whole training state (params, optimizer state, step, rng key and the
running epoch sums), so that a killed run resumes from its last checkpoint and ends with the same
parameters as an uninterrupted run.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str, *, save_every: int,
                       max_to_keep: int) -> ocp.CheckpointManager:
  """An async ``CheckpointManager`` saving every ``save_every`` steps; close it when done."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_every,
                                         enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Any | None:
  """The latest checkpoint restored into ``target``'s structure, shapes and shardings, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
      target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


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
