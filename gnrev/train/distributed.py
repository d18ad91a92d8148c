"""One run over several processes (hosts, or GPUs of one host) on JAX's distributed runtime.

See docs/multiprocess.md for the launcher commands.
"""

from __future__ import annotations

import jax
from absl import logging

from gnrev.train import sharding
from gnrev.train.configs import ConfigError


def initialize(distributed: bool = False, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts JAX's distributed runtime if asked to; returns whether it did. Call before any JAX.

  Args:
    distributed: initialise even without the values below, letting JAX detect them from the
      cluster (SLURM, Open MPI, Cloud TPU).
    coordinator_address: ``host:port`` of process 0, the same for every process.
    num_processes: the number of processes.
    process_id: this process's index, ``0 <= process_id < num_processes``.

  Raises:
    ConfigError: if the values are incomplete or inconsistent and the environment does not
      supply them (the message says which flags to set).
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if not distributed and all(v is None for v in given.values()):
    return False
  if num_processes is not None and process_id is not None and not (
      0 <= process_id < num_processes):
    raise ConfigError(f"--process_id must be in [0, --num_processes={num_processes}); "
                     f"got {process_id}.")
  if jax.config.jax_cpu_collectives_implementation is None:
    # CPU processes exchange data through gloo (jax's default since 0.5; older: none).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**given)
  except ValueError as e:
    missing = ", ".join(f"--{k}" for k, v in given.items() if v is None)
    raise ConfigError(
        f"Cannot start the distributed runtime: {e} Outside a cluster that JAX detects (SLURM, "
        f"Open MPI, Cloud TPU) give every process --coordinator_address=HOST:PORT, "
        f"--num_processes and its own --process_id; missing here: {missing}.") from e
  return True


def log_layout(mesh: jax.sharding.Mesh, batch_size: int | None) -> None:
  """Logs this process's place in ``mesh`` and its rows of each batch (devices only if
  ``batch_size`` is None)."""
  logging.info("JAX process %d of %d on %s; %d local devices %s; mesh of %d devices.",
               jax.process_index(), jax.process_count(), jax.default_backend(),
               jax.local_device_count(), [d.id for d in jax.local_devices()], mesh.size)
  if batch_size and batch_size % mesh.size == 0:
    rows = sharding.local_rows(mesh, batch_size)
    logging.info("Process %d loads rows %d:%d of every global batch of %d.",
                 jax.process_index(), rows.start, rows.stop, batch_size)
