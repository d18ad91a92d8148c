"""Checkpoints of the whole training state with orbax (the only module using its API), and
``config.init_from``. Each step directory also holds ``checksums.json`` (SHA-256 of its files),
since orbax does not checksum; a step that fails verification is treated as unreadable.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from gnrev.train.metrics import write_atomically

CHECKSUMS = "checksums.json"
# Step bookkeeping that orbax (re)writes while committing, after the digests; no array data.
_WRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA", "commit_success.txt")


def checkpoint_manager(directory: str, *, save_every: int,
                       max_to_keep: int | None) -> ocp.CheckpointManager:
  """An async ``CheckpointManager`` saving every ``save_every`` steps; close it when done."""
  directory = os.path.abspath(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_every, enable_async_checkpointing=True,
      create=True, cleanup_tmp_directories=True,
      async_options=ocp.AsyncOptions(
          post_finalization_callback=lambda: _write_checksums_of_pending_steps(directory)))
  return ocp.CheckpointManager(directory, options=options)


def _file_digests(step_dir: str) -> dict[str, str]:
  """``{path relative to step_dir: SHA-256 hex}`` of the step's files, sorted."""
  digests = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, step_dir)
      if relative in (CHECKSUMS, f"{CHECKSUMS}.tmp", *_WRITTEN_AT_COMMIT):
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          digest.update(chunk)
      digests[relative] = digest.hexdigest()
  return dict(sorted(digests.items()))


def _write_checksums_of_pending_steps(directory: str) -> None:
  """Writes ``checksums.json`` into the save's temporary directory, before orbax renames it."""
  # Saves are serialised and interrupted ones removed, so the one temporary dir is this save's.
  suffix = ocp.path.atomicity.TMP_DIR_SUFFIX
  for name in os.listdir(directory):
    if name.endswith(suffix):
      step_dir = os.path.join(directory, name)
      write_atomically(os.path.join(step_dir, CHECKSUMS),
                       json.dumps(_file_digests(step_dir), indent=1))


def verify_step(directory: str, step: int) -> None:
  """Checks every file of checkpoint ``step`` in ``directory`` against its ``checksums.json``.

  Raises:
    ValueError: naming the first missing or changed file, or a missing or corrupt checksum file.
  """
  step_dir = os.path.join(directory, str(step))
  try:
    with open(os.path.join(step_dir, CHECKSUMS)) as f:
      expected = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{CHECKSUMS} is missing, so its contents cannot be verified (a step "
                     "written before gnrev checksummed checkpoints)") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{CHECKSUMS} is corrupt ({e})") from None
  if not isinstance(expected, dict):
    raise ValueError(f"{CHECKSUMS} is corrupt (not a JSON object)")
  actual = _file_digests(step_dir)
  for relative, digest in expected.items():
    if relative not in actual:
      raise ValueError(f"file {relative} listed in {CHECKSUMS} is missing")
    if actual[relative] != digest:
      raise ValueError(f"file {relative} does not match its SHA-256 in {CHECKSUMS}: its bytes "
                       "changed after the save")


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), force=force)


def _first_line(error: Exception) -> str:
  return str(error).splitlines()[0][:200] if str(error) else ""


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Any | None:
  """The newest intact checkpoint restored like ``target`` (structure, shapes, shardings).

  Newer steps that are unreadable or fail :func:`verify_step` are logged and deleted. Returns
  None when there is no checkpoint.

  Raises:
    ValueError: if checkpoints exist but none can be restored (they are then left on disk).
  """
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
      target)
  unreadable = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      verify_step(str(manager.directory), step)
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except  (orbax, TensorStore, JSON, OS errors)
      unreadable.append((step, e))
      continue
    for bad, error in unreadable:
      logging.warning("Checkpoint step %d in %s is unreadable (%s: %s); resuming from step %d "
                      "instead.", bad, manager.directory, type(error).__name__,
                      _first_line(error), step)
      manager.delete(bad)
    return restored
  if unreadable:
    step, error = unreadable[0]
    raise ValueError(
        f"No checkpoint in {manager.directory} can be restored (steps "
        f"{', '.join(str(s) for s, _ in unreadable)}; step {step}: {type(error).__name__}: "
        f"{_first_line(error)}). Delete the directory to train that run from scratch.") from error
  return None


def checkpoints_of(directory: str) -> str:
  """``directory/checkpoints`` if a run's directory holds one, else ``directory`` itself."""
  inner = os.path.join(directory, "checkpoints")
  return inner if os.path.isdir(inner) else directory


def checkpoint_steps(directory: str) -> list[int]:
  """The kept checkpoint steps in ``directory`` (a run's directory or its checkpoints), sorted."""
  with ocp.CheckpointManager(os.path.abspath(checkpoints_of(directory))) as manager:
    return sorted(manager.all_steps())


def load_params(directory: str, step: int | None = None) -> Any:
  """The params of checkpoint ``step`` (None: the latest) in a run's directory or its
  ``checkpoints/``, as numpy arrays (restored on one local device, whatever wrote them).

  Raises:
    FileNotFoundError: if there is no checkpoint.
    ValueError: if ``step`` is not kept or its files fail :func:`verify_step`.
  """
  directory = checkpoints_of(directory)
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
    try:
      verify_step(str(manager.directory), step)
    except ValueError as e:
      raise ValueError(f"Checkpoint step {step} in {directory!r} is corrupt: {e}.") from None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step))
    return jax.device_get(manager.restore(step, args=ocp.args.StandardRestore(abstract))["params"])


# -- config.init_from: a run that starts from another run's checkpoint ------------------------

def check_init_from(config: ml_collections.ConfigDict) -> str | None:
  """The checkpoint directory of ``config.init_from`` after checking it; None without one.

  Raises:
    ValueError: for a missing or unknown field, or a workdir / run / step without a checkpoint.
  """
  source = config.get("init_from")
  if not source or not source.get("workdir"):
    if source and (source.get("run") or source.get("step") is not None):
      raise ValueError("init_from needs a workdir (the launcher workdir of the trained run).")
    return None
  unknown = sorted(set(source) - {"workdir", "run", "step"})
  if unknown:
    raise ValueError(f"Unknown init_from field(s) {', '.join(unknown)}; allowed: workdir, run, "
                     f"step.")
  run = source.get("run")
  if not run:
    raise ValueError("init_from needs a run (the name of a run of that workdir, e.g. 'adam').")
  directory = os.path.join(source.workdir, run, "checkpoints")
  steps = checkpoint_steps(directory) if os.path.isdir(directory) else []
  if not steps:
    raise ValueError(f"init_from: no checkpoint of run {run!r} in workdir "
                     f"{source.workdir!r} (looked in {directory!r}).")
  step = source.get("step")
  if step is not None and step not in steps:
    raise ValueError(f"init_from.step={step}: no such checkpoint of run {run!r}; kept steps: "
                     f"{', '.join(map(str, steps))}.")
  return directory


def apply_init_from(config: ml_collections.ConfigDict, state, tx: optax.GradientTransformation):
  """``state`` with ``config.init_from``'s params and a fresh optimizer state (else unchanged).

  Raises:
    ValueError: if the loaded params differ from the model's in structure, shapes or dtypes.
  """
  directory = check_init_from(config)
  if directory is None:
    return state
  loaded = load_params(directory, config.init_from.get("step"))
  expected = jax.tree.map(lambda p: (tuple(p.shape), str(p.dtype)), state.params)
  try:
    got = jax.tree.map(lambda p: (tuple(np.shape(p)), str(np.asarray(p).dtype)), loaded)
    same = jax.tree.structure(expected) == jax.tree.structure(got) and expected == got
  except (TypeError, ValueError):
    same = False
  if not same:
    raise ValueError(f"init_from: the parameters in {directory!r} do not fit this run's model "
                     f"(structure, shapes or dtypes differ); the model config must be the one "
                     f"that trained them.")
  params = jax.tree.map(lambda new, old: jax.device_put(jnp.asarray(new, old.dtype),
                                                        getattr(old, "sharding", None)),
                        loaded, state.params)
  opt_state = jax.tree.map(lambda new, old: jax.device_put(new, getattr(old, "sharding", None)),
                           tx.init(params), state.opt_state)
  return state.replace(params=params, opt_state=opt_state)
