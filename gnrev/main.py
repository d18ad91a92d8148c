"""Command-line entry point: ``python -m gnrev.main --config=configs/X.py --workdir=runs/X``.

``--config`` is an ml_collections config file (locked: ``--config.a.b=v`` overrides only
existing fields; ``configs/X.py:arg`` passes ``arg`` to its ``get_config``). The run itself is
:func:`gnrev.train.train_and_evaluate`, which notebooks call directly. One run over several
processes (hosts, or one process per GPU): ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` on every process, or ``--distributed`` alone under SLURM / Open MPI (see
docs/multiprocess.md and :mod:`gnrev.train.distributed`).
"""

import os

# jaxlib's CPU Cholesky and triangular solves run on OpenBLAS, whose threads fight XLA's for the
# cores (GN steps 2.5x slower on 2 cores); set before numpy or jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gnrev import train  # noqa: E402
from gnrev.train import distributed  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and plots.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
flags.DEFINE_bool("distributed", False, "Start jax.distributed; values not given below are "
                  "detected from the cluster (SLURM, Open MPI, ...).")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # orbax logs every save step at INFO; keep the console to gnrev's own progress.
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id)  # before any other JAX call
  distributed.log_layout(FLAGS.config.num_devices, FLAGS.config.data.batch_size)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
