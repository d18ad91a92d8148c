"""Data parallelism with JAX's own sharding: batch split over a device mesh, parameters replicated.

The mesh spans ``jax.devices()``. On one host these are the local devices; on several hosts,
call ``jax.distributed.initialize()`` first (one process per host, before any other JAX call)
and the same code runs unchanged: the mesh then spans every host's devices, each process loads
only its own slice of the global batch (:func:`process_slice`) and
``jax.make_array_from_process_local_data`` assembles the global array, while orbax writes
checkpoints collectively and only process 0 writes metrics.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices (0: all of them)."""
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(f"num_devices must be between 0 (all) and {len(devices)}; got {num_devices}.")
  return Mesh(np.array(devices[:num_devices or len(devices)]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
  if batch_size % mesh.size:
    raise ValueError(
        f"{what}={batch_size} must be divisible by the number of devices ({mesh.size}) to "
        f"split the batch evenly; change it or set --config.num_devices.")


def process_slice(global_batch_size: int) -> slice:
  """The rows of a global batch that this process loads (contiguous, in process order)."""
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
  """Places this process's rows of each global-batch array sharded along the ``data`` axis."""
  sharding = batch_sharded(mesh)
  return tuple(jax.make_array_from_process_local_data(
      sharding, a[process_slice(len(a))]) for a in arrays)
