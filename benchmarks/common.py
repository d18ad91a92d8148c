"""What every benchmark script shares: its command line, progress lines and the one JSON object.

Nothing here imports JAX, so ``--help`` answers at once; a script parses its arguments with
:func:`parse_args` first and imports JAX after. Run the scripts from the repository root, either
as ``python benchmarks/NAME.py`` or as ``python -m benchmarks.NAME``. Progress goes to stderr,
the result (exactly one JSON object) to stdout, so ``python benchmarks/NAME.py > result.json``
keeps only the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

_START = time.perf_counter()
_NAME = os.path.splitext(os.path.basename(sys.argv[0] or "benchmark"))[0]


def parse_args(doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
               argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Parses the command line of a benchmark whose module docstring is ``doc``.

  The first docstring line is the description, the rest the epilog of ``--help``. Also sets
  ``OPENBLAS_NUM_THREADS=1`` unless the environment sets it: jaxlib's LAPACK calls (Cholesky,
  eigh, SVD) go through OpenBLAS, whose thread pool busy-waits against XLA's threads on a small
  CPU (measured 2.5x slower GN steps on 2 cores). It must be set before JAX is imported.

  Args:
    doc: the script's module docstring.
    add_arguments: adds the script's own flags to the parser.
    argv: arguments (default: ``sys.argv[1:]``).

  Returns:
    The parsed arguments.

  Example::

    ARGS = common.parse_args(__doc__, lambda p: p.add_argument("--repeats", type=int, default=5))
    import jax  # only after parsing
  """
  lines = doc.strip().splitlines()
  parser = argparse.ArgumentParser(
      description=lines[0], epilog="\n".join(lines[1:]).strip() or None,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  args = parser.parse_args(argv)
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  return args


def positive_int(text: str) -> int:
  """An argparse type: an integer >= 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
  return value


def log(message: str) -> None:
  """One progress line on stderr, with the seconds since start."""
  print(f"[{_NAME} {time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def load_average() -> Optional[float]:
  """The 1-minute load average divided by the number of CPUs (None where unavailable)."""
  try:
    return os.getloadavg()[0] / (os.cpu_count() or 1)
  except (AttributeError, OSError):
    return None


def time_interleaved(named_calls: Mapping[str, tuple[Callable, tuple]], repeats: int,
                     label: str = "") -> dict[str, dict[str, float]]:
  """Wall times of each ``name: (fn, args)``, interleaved, after one compiling call each.

  Every repeat calls every function once in turn, so that load from other processes on a shared
  machine falls on all of them alike; the median over repeats is the reported time (the minimum
  and the spread are kept to show how noisy the run was).

  Returns:
    ``{name: {"median_s", "min_s", "max_s"}}``.
  """
  import jax  # noqa: PLC0415  (JAX is imported only after the command line was parsed)

  for name, (fn, args) in named_calls.items():
    log(f"{label}compiling {name}")
    jax.block_until_ready(fn(*args))
  samples = {name: [] for name in named_calls}
  for repeat in range(repeats):
    for name, (fn, args) in named_calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      samples[name].append(time.perf_counter() - start)
    log(f"{label}repeat {repeat + 1}/{repeats}: " +
        ", ".join(f"{name} {values[-1]:.3f}s" for name, values in samples.items()))
  return {name: {"median_s": statistics.median(values), "min_s": min(values),
                 "max_s": max(values)} for name, values in samples.items()}


def noise_note(timings: Mapping[str, Mapping[str, float]], loads: Sequence[Optional[float]]
               ) -> str:
  """A sentence saying whether the timings look trustworthy (spread and machine load)."""
  spread = max(t["max_s"] / t["min_s"] for t in timings.values())
  busy = [load for load in loads if load is not None]
  load = max(busy) if busy else math.nan
  if spread > 1.5 or load > 1.0:
    return (f"noisy: slowest/fastest repeat up to {spread:.2f}x, load per CPU up to {load:.2f}; "
            "the interleaved medians' ratios are the numbers to read, absolute times are not")
  return f"quiet: slowest/fastest repeat up to {spread:.2f}x, load per CPU up to {load:.2f}"


def _plain(value: Any) -> Any:
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def emit(report: Mapping[str, Any]) -> None:
  """Prints the benchmark's result: exactly one JSON object on stdout."""
  log("done")
  print(json.dumps(report, indent=1, default=_plain), flush=True)
