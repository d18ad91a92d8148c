"""gnrev on a GPU: install JAX's CUDA build, run the test subsets and the paper-size benchmarks.

A prepared run for a machine with an NVIDIA GPU, in order:

1. install: unless JAX already sees a GPU, ``pip install "jax[cuda12]==<the installed jax>"``
   (``--cuda 13`` for CUDA 13; ``--wheelhouse DIR`` installs from local wheels, offline);
2. device: the GPU's name, driver and memory (``nvidia-smi``), JAX's and jaxlib's versions and
   devices;
3. tests (``--tests``): ``x64``, the float64 reference tests (``pytest -m x64``) of the numerical
   wings (tests/gn, tests/optim, tests/analysis, tests/curvature, tests/nets, tests/prune,
   tests/meta), which on a GPU also check that their float32 parts are not run in TF32;
   ``optim``, the optimizer tests (tests/optim, tests/gn/test_transforms.py,
   tests/gn/test_precision.py); ``none``;
4. benchmarks, each the repository's own script, with absolute times per step in its JSON:
   ``gn_step`` (GN / SGD at the paper's MNIST size n=1024, d=784, M=8000, L=2, the GN steps
   also at ``precision="default"`` to measure what the "highest" default costs, and the
   float32 accuracy against float64), ``fishleg_step`` (FishLeg / Adam on the paper's autoencoder at
   batch 100 and 1000), ``treemaml_step`` (TreeMAML / MAML); ``--experiment`` adds the GN
   mini-batch comparison at ``paper_mnist5k`` (experiments/gn_generalization.py, 3 seeds).

Everything runs in subprocesses (this script never imports JAX, so a fresh install is used), and
the report, one JSON object, goes to stdout and to ``--output``. ``--dry-run`` runs the same
steps on the CPU at tiny sizes, installing nothing (a check of the script, no numbers to keep).

Examples (repository root):
  python benchmarks/gpu.py                                # on the GPU machine, ~10 minutes
  python benchmarks/gpu.py --tests none --only gn_step    # one benchmark
  python benchmarks/gpu.py --dry-run --output /tmp/gpu.json   # on a CPU, to check the script
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a file: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "gpu.json")

NUMERICAL_WINGS = ("tests/gn", "tests/optim", "tests/analysis", "tests/curvature", "tests/nets",
                   "tests/prune", "tests/meta")
TEST_SUBSETS = {
    "x64": ["-m", "x64", *NUMERICAL_WINGS],
    "optim": ["tests/optim", "tests/gn/test_transforms.py", "tests/gn/test_precision.py"],
}
# The dry run checks the plumbing with one quick file instead.
DRY_RUN_TESTS = ["tests/curvature/test_precision.py"]

# benchmark: (arguments at the paper's sizes, arguments of the dry run)
BENCHMARKS = {
    "gn_step": (["--sizes", "paper_mnist", "--accuracy", "paper_mnist", "--variants",
                 "gn_svd,gn_svd_lowered,gn_thin_svd,gn_damped,gn_cholesky,gn_cholesky_lowered,"
                 "gn_cholesky_invert"],
                ["--sizes", "tiny", "--repeats", "1", "--variants", "gn_svd,gn_svd_lowered",
                 "--no-accuracy"]),
    "fishleg_step": (["--sizes", "mnist_paper_batch100,mnist_paper_batch1000"],
                     ["--sizes", "tiny", "--repeats", "1"]),
    "treemaml_step": (["--repeats", "20", "--no-otd"],
                      ["--repeats", "1", "--branching", "2,2,2", "--no-otd"]),
}
# The committed CPU result (experiments/results) used the swept step sizes: --tuned.
EXPERIMENT = (["experiments/gn_generalization.py", "--findings", "minibatch", "--size",
               "paper_mnist5k", "--tuned"],
              ["experiments/gn_generalization.py", "--findings", "minibatch", "--size", "smoke"])

_DEVICE_PROBE = """
import json, jax, jaxlib
devices = jax.devices()
print(json.dumps({"jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
                  "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
                  "devices": [str(d) for d in devices]}))
"""


def _add_arguments(parser):
  parser.add_argument("--dry-run", action="store_true",
                      help="run every step on the CPU at tiny sizes and install nothing")
  parser.add_argument("--tests", default="x64,optim",
                      help=f"comma-separated test subsets out of {', '.join(TEST_SUBSETS)}, or "
                           "'none' (default: %(default)s)")
  parser.add_argument("--only", default=",".join(BENCHMARKS),
                      help=f"comma-separated benchmarks out of {', '.join(BENCHMARKS)}, or "
                           "'none' (default: all)")
  parser.add_argument("--experiment", action="store_true",
                      help="also run the GN mini-batch experiment at paper_mnist5k (3 seeds; "
                           "tens of minutes on a GPU)")
  parser.add_argument("--cuda", default="12", choices=("12", "13"),
                      help="CUDA major version of the jax build to install (default: %(default)s)")
  parser.add_argument("--wheelhouse", default=None,
                      help="install the CUDA build from the wheels in this directory (offline)")
  parser.add_argument("--output", default=None,
                      help=f"where to write the JSON report (default: {DEFAULT_OUTPUT}; "
                           "nowhere with --dry-run)")
  parser.add_argument("--timeout", type=common.positive_int, default=1800,
                      help="seconds allowed to each step (default: %(default)s)")


def _selection(text: str, allowed, what: str) -> list[str]:
  names = [] if text == "none" else [name for name in text.split(",") if name]
  unknown = sorted(set(names) - set(allowed))
  if unknown:
    raise SystemExit(f"Unknown {what} {', '.join(unknown)}; allowed: {', '.join(allowed)} or "
                     "none.")
  return names


def _run(command: list[str], env: dict, timeout: int) -> dict:
  """Runs ``command`` from the repository root; its stderr streams to ours."""
  shown = command if "-c" not in command else command[:command.index("-c") + 1] + ["..."]
  common.log("running " + " ".join(shown))
  start = time.perf_counter()
  try:
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            timeout=timeout, check=False)
    stdout, returncode = result.stdout, result.returncode
  except subprocess.TimeoutExpired as e:
    stdout, returncode = e.stdout or "", "timeout"
    stdout = stdout if isinstance(stdout, str) else stdout.decode()
  return {"command": " ".join(command), "returncode": returncode,
          "seconds": round(time.perf_counter() - start, 1), "stdout": stdout}


def _environment(dry_run: bool) -> dict:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
  if dry_run:
    env["JAX_PLATFORMS"] = "cpu"
  else:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # tests and benchmarks in turn
  return env


def device_info(env: dict, timeout: int) -> dict:
  """JAX's view of the machine and, where there is one, ``nvidia-smi``'s."""
  probe = _run([sys.executable, "-c", _DEVICE_PROBE], env, timeout)
  info = json.loads(probe["stdout"]) if probe["returncode"] == 0 else {"probe_failed": probe}
  if shutil.which("nvidia-smi"):
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"], env, timeout)
    info["nvidia_smi"] = smi["stdout"].strip().splitlines()
  return info


def install_cuda_jax(env: dict, cuda: str, wheelhouse, timeout: int) -> dict:
  """Installs ``jax[cudaNN]`` at the installed jax's version, unless JAX already sees a GPU."""
  before = device_info(env, timeout)
  if before.get("backend") == "gpu":
    return {"skipped": "jax already runs on the GPU", "jax_version": before["jax_version"]}
  version = before.get("jax_version")
  requirement = f"jax[cuda{cuda}]" + (f"=={version}" if version else "")
  command = [sys.executable, "-m", "pip", "install", requirement]
  if wheelhouse:
    command += ["--no-index", "--find-links", wheelhouse]
  result = _run(command, env, timeout)
  result["stdout"] = result["stdout"][-2000:]
  return result


def _pytest_summary(stdout: str) -> str:
  lines = [line for line in stdout.strip().splitlines() if line.strip()]
  summary = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
  return (summary or lines or [""])[-1].strip("= ")


def run_tests(subsets: list[str], env: dict, dry_run: bool, timeout: int) -> dict:
  results = {}
  for name in (["dry_run"] if dry_run and subsets else subsets):
    paths = DRY_RUN_TESTS if name == "dry_run" else TEST_SUBSETS[name]
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
                  env, timeout)
    result["summary"] = _pytest_summary(result.pop("stdout"))
    results[name] = result
  return results


def run_benchmarks(names: list[str], env: dict, dry_run: bool, timeout: int) -> dict:
  results = {}
  for name in names:
    arguments = BENCHMARKS[name][1 if dry_run else 0]
    result = _run([sys.executable, f"benchmarks/{name}.py", *arguments], env, timeout)
    stdout = result.pop("stdout")
    result["report"] = json.loads(stdout) if result["returncode"] == 0 else stdout[-2000:]
    results[name] = result
  return results


def step_times(benchmarks: dict) -> dict:
  """The absolute seconds per step from each benchmark's report, side by side."""
  times = {}
  gn_report = benchmarks.get("gn_step", {}).get("report")
  if isinstance(gn_report, dict):
    for size, case in gn_report.get("revmlp", {}).items():
      for variant, timing in case.get("seconds", {}).items():
        times[f"gn_step/{size}/{variant}"] = timing["median_s"]
  fishleg_report = benchmarks.get("fishleg_step", {}).get("report")
  if isinstance(fishleg_report, dict):
    for size, case in fishleg_report.items():
      if isinstance(case, dict) and "step_ms" in case:
        for variant, ms in case["step_ms"].items():
          times[f"fishleg_step/{size}/{variant}"] = ms / 1e3
  treemaml_report = benchmarks.get("treemaml_step", {}).get("report")
  if isinstance(treemaml_report, dict):
    for variant, timing in treemaml_report.get("seconds", {}).items():
      times[f"treemaml_step/{variant}"] = timing["median_s"]
  return times


def run_experiment(env: dict, dry_run: bool, out_dir: str, timeout: int) -> dict:
  arguments = EXPERIMENT[1 if dry_run else 0]
  result = _run([sys.executable, *arguments, "--out", out_dir,
                 "--workdir", os.path.join(out_dir, "runs")], env, timeout)
  result["stdout"] = result["stdout"][-2000:]
  return result


def main(argv=None):
  args = common.parse_args(__doc__, _add_arguments, argv)
  subsets = _selection(args.tests, TEST_SUBSETS, "test subset(s)")
  names = _selection(args.only, BENCHMARKS, "benchmark(s)")
  output = args.output or (None if args.dry_run else DEFAULT_OUTPUT)
  env = _environment(args.dry_run)
  report = {"benchmark": "gpu", "dry_run": args.dry_run,
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
  if not args.dry_run:
    report["install"] = install_cuda_jax(env, args.cuda, args.wheelhouse, args.timeout)
  report["device"] = device_info(env, args.timeout)
  if not args.dry_run and report["device"].get("backend") != "gpu":
    common.log("warning: JAX sees no GPU; the numbers below are not GPU numbers")
  report["tests"] = run_tests(subsets, env, args.dry_run, args.timeout)
  report["benchmarks"] = run_benchmarks(names, env, args.dry_run, args.timeout)
  report["seconds_per_step"] = step_times(report["benchmarks"])
  if args.experiment:
    out_dir = os.path.join(os.path.dirname(output or DEFAULT_OUTPUT), "gpu_experiment")
    report["experiment"] = run_experiment(env, args.dry_run, out_dir, args.timeout)
  if output:
    with open(output, "w") as f:
      json.dump(report, f, indent=1)
    common.log(f"wrote {output}")
  common.emit(report)


if __name__ == "__main__":
  main()
