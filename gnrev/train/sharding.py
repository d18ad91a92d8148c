"""Data parallelism with JAX's own sharding: batch split over a device mesh, parameters replicated.

The mesh spans the devices of every process. In one process these are its local devices; with
several processes (one per host or per GPU, after :func:`gnrev.train.distributed.initialize`)
the same code runs unchanged: the mesh lists the devices process by process, each process loads
only the rows of every global batch that its own devices hold (:func:`local_rows`) and
``jax.make_array_from_process_local_data`` assembles the global ``jax.Array``. Under ``jit`` every
step then sees the global batch, so a step is the same computation whatever the number of
processes; orbax writes checkpoints collectively and only process 0 writes metrics.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gnrev.train.configs import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over ``num_devices`` devices (0: all of them), process by process.

  With several processes, each one contributes the same number of its own devices
  (``num_devices / process_count``), so that every process holds a contiguous block of rows.
  """
  processes = jax.process_count()
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  if num_devices < 0 or num_devices > len(devices) or num_devices % processes:
    raise ConfigError(
        f"num_devices must be 0 (all) or a multiple of the number of processes ({processes}) "
        f"up to {len(devices)}; got {num_devices}.")
  per_process = (num_devices or len(devices)) // processes
  chosen = [d for p in range(processes) for d in [d for d in devices if d.process_index == p]
            [:per_process]]
  return Mesh(np.array(chosen), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def replicate(mesh: Mesh, tree):
  """``tree`` (the same values on every process, e.g. an initial state) replicated on ``mesh``.

  Unlike ``jax.device_put``, which with several processes checks that the values agree with one
  all-gather per leaf, each process fills its own devices: nothing crosses processes.
  """
  sharding = replicated(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)),
                      tree)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
  if batch_size % mesh.size:
    raise ConfigError(
        f"{what}={batch_size} must be divisible by the number of devices ({mesh.size}) to "
        f"split the batch evenly; change it or set --config.num_devices.")


def local_rows(mesh: Mesh, global_batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold (contiguous, from the mesh).

  With 2 processes of 4 devices each, ``local_rows(mesh, 32)`` is ``slice(0, 16)`` on process
  0 and ``slice(16, 32)`` on process 1.

  Example:
    >>> mesh = make_mesh()
    >>> local_rows(mesh, 4 * mesh.size) == slice(0, 4 * mesh.size)   # one process: every row
    True
  """
  starts = sorted(index[0].start or 0 for index in batch_sharded(mesh)
                  .addressable_devices_indices_map((global_batch_size,)).values())
  per_device = global_batch_size // mesh.size
  if starts != list(range(starts[0], starts[0] + per_device * len(starts), per_device)):
    raise ValueError(f"This process's devices hold rows starting at {starts} of the global "
                     "batch, not one contiguous block; build the mesh with make_mesh.")
  return slice(starts[0], starts[0] + per_device * len(starts))


def shard_rows(mesh: Mesh, rows: np.ndarray, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """The global batch ``array[rows]`` of each array, sharded along ``data``.

  Each process gathers only its own part of ``rows`` (:func:`local_rows`): the other processes
  supply the rest of the global ``jax.Array``.

  Example:
    >>> mesh = make_mesh()
    >>> x = np.arange(2 * mesh.size * 3.0).reshape(-1, 3)
    >>> (batch,) = shard_rows(mesh, np.arange(2 * mesh.size)[::-1], x)
    >>> bool((np.asarray(batch) == x[::-1]).all())
    True
  """
  sharding, mine = batch_sharded(mesh), rows[local_rows(mesh, len(rows))]
  return tuple(jax.make_array_from_process_local_data(sharding, a[mine], (len(rows),) +
                                                      a.shape[1:]) for a in arrays)


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Places this process's rows of each global-batch array sharded along the ``data`` axis."""
  return shard_rows(mesh, np.arange(len(arrays[0])), *arrays)
