"""Command-line entry point: ``python -m gnrev.main --config=configs/X.py --workdir=runs/X``.

``--config`` is an ml_collections config file (locked: ``--config.a.b=v`` overrides only
existing fields; ``configs/X.py:arg`` passes ``arg`` to its ``get_config``). The run itself is
:func:`gnrev.train.train_and_evaluate`, which notebooks call directly. For several hosts, call
``jax.distributed.initialize()`` before training (see :mod:`gnrev.train.sharding`).
"""

import os

# jaxlib's CPU Cholesky and triangular solves run on OpenBLAS, whose threads fight XLA's for the
# cores (GN steps 2.5x slower on 2 cores); set before numpy or jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gnrev import train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and plots.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # orbax logs every save step at INFO; keep the console to gnrev's own progress.
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
