"""Data parallelism with JAX's own sharding: batch split over a device mesh, parameters replicated.

The mesh spans every process's devices and each process loads only its rows of a global batch,
so a jitted step is the same computation whatever the number of processes."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gnrev.train.configs import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over ``num_devices`` devices (0: all), the same number per process.

  Raises:
    ConfigError: if ``num_devices`` is negative, too large or not a multiple of the processes.
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
  """``tree`` (equal on every process) replicated on ``mesh`` without cross-process traffic."""
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
  """The contiguous rows of a global batch that this process's devices hold.

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
  """Each ``array[rows]`` as a global batch sharded along ``data`` (a process reads its rows).

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
