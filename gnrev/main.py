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
Anything else is a bug and keeps its full traceback.
"""

import os

# jaxlib's CPU Cholesky and triangular solves run on OpenBLAS, whose threads fight XLA's for the
# cores (GN steps 2.5x slower on 2 cores); set before numpy or jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import inspect  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from gnrev import config_flag, train  # noqa: E402
from gnrev.train import distributed, workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and plots.")
config_flag.define_config_flag("config", module_name=FLAGS.find_module_defining_flag("workdir"))
flags.mark_flags_as_required(["config", "workdir"])
flags.DEFINE_bool("distributed", False, "Start jax.distributed; values not given below are "
                  "detected from the cluster (SLURM, Open MPI, ...).")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")

# What a user's input raises: a bad flag or config (absl wraps the config file's own ValueErrors),
# a config the launcher's checks reject, a missing file or an unusable workdir.
USER_ERRORS = (flags.Error, train.ConfigError, OSError)
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")


def _traceback_wanted(argv) -> bool:
  if os.environ.get("GNREV_TRACEBACK", "") not in ("", "0"):
    return True
  return any(re.fullmatch(r"--?(verbosity|v)=([1-9]\d*)", arg) for arg in argv)


def _text(error: BaseException) -> str:
  """The message of ``error`` on one line (ml_collections quotes a missing field's name; an OS
  error says what failed on which path, not just its errno)."""
  if isinstance(error, OSError) and error.strerror:
    paths = [repr(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{error.strerror}: {' -> '.join(paths)}" if paths else error.strerror
  while error.args and isinstance(error.args[0], BaseException):  # ml_collections wraps its own
    error = error.args[0]
  message = str(error)
  if isinstance(error, KeyError) and error.args:
    message = str(error.args[0])
  if "Traceback (most recent call last)" in message:  # ml_collections embeds the config's one
    message = [line for line in message.splitlines() if line.strip()][-1]
  return " ".join(message.split()) or type(error).__name__


def _exit_with_one_line(message: str) -> None:
  print(f"gnrev.main: error: {message} (GNREV_TRACEBACK=1 shows the traceback)", file=sys.stderr)
  sys.exit(1)


def _unknown_config_field(error: BaseException) -> bool:
  """Whether ``error`` is ml_collections rejecting a ``--config.<field>`` that does not exist."""
  frames = inspect.getinnerframes(error.__traceback__) if error.__traceback__ else []
  return isinstance(error, (KeyError, AttributeError)) and bool(frames) and (
      "ml_collections" in frames[-1].filename)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config reported on one line; ``--help`` exits 0."""
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
  try:
    return FLAGS(argv)
  except (*USER_ERRORS, KeyError, AttributeError) as e:
    unknown = _unknown_config_field(e)
    if _traceback_wanted(argv) or not (unknown or isinstance(e, USER_ERRORS)):
      raise
    _exit_with_one_line(("unknown config field: " if unknown else "") + _text(e))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  train.metrics.quiet_library_logs()
  try:
    with workdir.stop_on_signals():  # SIGTERM / Ctrl-C: save, then exit 143 / 130
      distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id)  # before any other JAX call
      train.train_and_evaluate(config_flag.finish_config_flag("config"), FLAGS.workdir)
  except workdir.Stopped as e:
    print(f"gnrev.main: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except USER_ERRORS as e:
    if _traceback_wanted(sys.argv):
      raise
    _exit_with_one_line(_text(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
