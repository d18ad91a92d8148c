"""Command-line entry point: ``python -m gnrev.main --config=configs/X.py --workdir=runs/X``.

``--config`` is an ml_collections config file (locked: ``--config.a.b=v`` overrides only
existing fields, and every option of each run's optimizer exists, with its default;
``configs/X.py:arg`` passes ``arg`` to its ``get_config``). The run itself is
:func:`gnrev.train.train_and_evaluate`, which notebooks call directly. One run over several
processes (hosts, or one process per GPU): ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` on every process, or ``--distributed`` alone under SLURM / Open MPI (see
docs/multiprocess.md and :mod:`gnrev.train.distributed`).

A bad flag, config, data file or workdir stops the launch before anything trains with one line on
stderr and exit status 1; ``GNREV_TRACEBACK=1`` (or ``--verbosity=1``) shows the traceback.
"""

import os

# jaxlib's CPU Cholesky and triangular solves run on OpenBLAS, whose threads fight XLA's for the
# cores (GN steps 2.5x slower on 2 cores); set before numpy or jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ast  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from gnrev import train  # noqa: E402
from gnrev.train import configs, distributed, workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and plots.")
configs.define_config_flag("config")
flags.mark_flags_as_required(["config", "workdir"])
flags.DEFINE_bool("distributed", False, "Start jax.distributed; values not given below are "
                  "detected from the cluster (SLURM, Open MPI, ...).")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")

# What a user's input can raise (flags, config files, data files, workdirs); anything else is a
# bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, AttributeError, KeyError, OSError, flags.Error)


def _traceback_wanted(argv) -> bool:
  if os.environ.get("GNREV_TRACEBACK", "") not in ("", "0"):
    return True
  return any(re.fullmatch(r"--?(verbosity|v)=([1-9]\d*)", arg) for arg in argv)


def _text(error: BaseException) -> str:
  """The message of ``error`` on one line (KeyErrors and ml_collections quote theirs; an OS
  error says what failed on which path, not just its errno)."""
  if isinstance(error, OSError) and error.strerror:
    paths = [repr(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{error.strerror}: {' -> '.join(paths)}" if paths else error.strerror
  message = str(error.args[0]) if error.args else str(error)
  if "Traceback (most recent call last)" in message:  # ml_collections embeds the config's one
    message = [line for line in message.splitlines() if line.strip()][-1]
  while message[:1] in ("'", '"') and message[-1:] == message[:1]:
    try:
      message = str(ast.literal_eval(message))
    except (ValueError, SyntaxError):
      break
  return " ".join(message.split()) or type(error).__name__


def _exit_with_one_line(message: str) -> None:
  print(f"gnrev.main: error: {message} (GNREV_TRACEBACK=1 shows the traceback)", file=sys.stderr)
  sys.exit(1)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config reported on one line."""
  try:
    return FLAGS(argv)
  except USER_ERRORS as e:
    if _traceback_wanted(argv):
      raise
    unknown = isinstance(e, (KeyError, AttributeError))  # --config.<field> that is not there
    _exit_with_one_line(("unknown config field: " if unknown else "") + _text(e))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # orbax logs every save step at INFO; keep the console to gnrev's own progress.
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  try:
    with workdir.stop_on_signals():  # SIGTERM / Ctrl-C: save, then exit 143 / 130
      distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id)  # before any other JAX call
      config = configs.finish_config_flag("config")
      distributed.log_layout(config.num_devices, config.get("data", {}).get("batch_size"))
      train.train_and_evaluate(config, FLAGS.workdir)
  except workdir.Stopped as e:
    print(f"gnrev.main: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except USER_ERRORS as e:
    if _traceback_wanted(sys.argv):
      raise
    _exit_with_one_line(_text(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
