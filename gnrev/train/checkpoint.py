"""Checkpoints with orbax: the one module that knows orbax's API.

A checkpoint holds the whole training state (params, optimizer state, step, rng key and the
running epoch sums), so that a killed run resumes from its last intact checkpoint and ends with
the same parameters as an uninterrupted run.

orbax does not checksum what it writes (a flipped bit in a data file restores as a different
value), so every step directory also holds ``checksums.json``: the SHA-256 of each of its files,
written into orbax's temporary directory after the last file is final and before orbax renames
it into place, so that a committed step always carries the digests of exactly its own files. A
step is verified against them before it is restored; one that does not match is treated like
an unreadable one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKSUMS = "checksums.json"
# Files of the step directory itself that orbax writes or rewrites while it commits, after the
# digests: its step bookkeeping (timestamps, handler names), no array data.
_WRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA", "commit_success.txt")


def checkpoint_manager(directory: str, *, save_every: int,
                       max_to_keep: int | None) -> ocp.CheckpointManager:
  """An async ``CheckpointManager`` saving every ``save_every`` steps; close it when done.

  Temporary directories of saves that a kill interrupted are removed when it opens (orbax
  commits a checkpoint by renaming its temporary directory, so they never count as a step).
  """
  directory = os.path.abspath(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_every, enable_async_checkpointing=True,
      create=True, cleanup_tmp_directories=True,
      async_options=ocp.AsyncOptions(
          post_finalization_callback=lambda: _write_checksums_of_pending_steps(directory)))
  return ocp.CheckpointManager(directory, options=options)


def _file_digests(step_dir: str) -> dict[str, str]:
  """``{path relative to step_dir: SHA-256 hex}`` of the step's files (all those below its item
  directories, e.g. ``default/``: the arrays, their metadata and sharding)."""
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
  """Writes ``checksums.json`` into the temporary directory of the save being committed.

  orbax calls this (on the primary process) once every process has written its files and
  before the rename that commits the step; saves are serialised, so the one temporary step
  directory left (interrupted ones are removed when the manager opens) is this save's.
  """
  suffix = ocp.path.atomicity_types.TMP_DIR_SUFFIX
  for name in os.listdir(directory):
    if name.endswith(suffix):
      step_dir = os.path.join(directory, name)
      text = json.dumps(_file_digests(step_dir), indent=1)
      partial = os.path.join(step_dir, f"{CHECKSUMS}.tmp")
      with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
      os.replace(partial, os.path.join(step_dir, CHECKSUMS))


def verify_step(directory: str, step: int) -> None:
  """Checks every file of checkpoint ``step`` in ``directory`` against its ``checksums.json``.

  Raises:
    ValueError: naming the first file that is missing or whose bytes differ from its digest, or
      saying that ``checksums.json`` itself is missing or unreadable.
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


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> Any | None:
  """The newest intact checkpoint restored into ``target``'s structure, shapes and shardings.

  A checkpoint that cannot be read (a truncated data file, an empty ``_METADATA``) or whose
  files do not match their checksums (:func:`verify_step`) is skipped with a warning naming it
  and the step used instead, and deleted, so that the resumed run saves that step again.
  Returns None when there is no checkpoint.

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
      verify_step(str(manager.directory), step)
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

  Raises:
    ValueError: if the step's files do not match their checksums (:func:`verify_step`).
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
    try:
      verify_step(str(manager.directory), step)
    except ValueError as e:
      raise ValueError(f"Checkpoint step {step} in {directory!r} is corrupt: {e}.") from None
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step))
    return jax.device_get(manager.restore(step, args=ocp.args.StandardRestore(abstract))["params"])
