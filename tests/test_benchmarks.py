"""The benchmark scripts run as the README says: --help at once, one JSON object on stdout."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("gn_step", "treemaml_step", "fishleg_step", "gpu")


def _run(args, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, check=False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_at_once_without_importing_jax(script):
  start = time.perf_counter()
  as_file = _run(["-X", "importtime", f"benchmarks/{script}.py", "--help"], timeout=60)
  as_module = _run(["-m", f"benchmarks.{script}", "--help"], timeout=60)
  elapsed = time.perf_counter() - start
  for result in (as_file, as_module):
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--" in result.stdout
  imported = [line.split("|")[-1].strip() for line in as_file.stderr.splitlines()
              if line.startswith("import time:")]
  assert not [name for name in imported if name.split(".")[0] == "jax"]
  assert elapsed < 30, f"--help took {elapsed:.1f} s"


def test_bad_flag_is_an_error_naming_the_allowed_values():
  result = _run(["benchmarks/gn_step.py", "--sizes", "huge"], timeout=120)
  assert result.returncode != 0 and "allowed: tiny, small" in result.stderr
  result = _run(["benchmarks/gpu.py", "--dry-run", "--only", "gn_stp"], timeout=60)
  assert result.returncode != 0 and "allowed: gn_step, fishleg_step, treemaml_step" in result.stderr


def _json_of(result):
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.strip(), "no progress lines on stderr"
  return json.loads(result.stdout)  # exactly one JSON object: anything else fails to parse


def test_gn_step_runs_end_to_end_at_a_tiny_size():
  report = _json_of(_run(["benchmarks/gn_step.py", "--sizes", "tiny", "--repeats", "1",
                          "--variants", "gn_svd", "--no-accuracy"]))
  case = report["revmlp"]["tiny"]
  assert set(case["seconds"]) == {"sgd", "gn_svd"}
  step = case["steps"]["gn_svd"]
  for key in ("measured_over_sgd", "flop_floor_over_sgd", "measured_over_floor"):
    assert step[key] > 0
  assert set(step["gflops"]) >= {"forward", "jvps", "gram_products", "factorisations"}
  assert "timing_note" in case and report["accuracy"] == {}


def test_treemaml_step_runs_end_to_end_at_a_tiny_size():
  report = _json_of(_run(["-m", "benchmarks.treemaml_step", "--repeats", "1", "--branching",
                          "2,2,2", "--no-otd"]))
  assert report["num_tasks"] == 8
  assert set(report["seconds"]) == {"maml", "fixed", "learned_threshold"}
  assert report["fixed_over_maml"] > 0 and report["learned_threshold_over_maml"] > 0


def test_gpu_script_dry_run_reports_device_versions_and_step_times(tmp_path):
  # The cheapest benchmark and no tests keep this short; `python benchmarks/gpu.py --dry-run`
  # runs every step (docs/benchmarks.md).
  output = tmp_path / "gpu.json"
  report = _json_of(_run(["benchmarks/gpu.py", "--dry-run", "--tests", "none", "--only",
                          "treemaml_step", "--output", str(output)]))
  assert report == json.loads(output.read_text())
  assert report["dry_run"] and "install" not in report
  assert report["device"]["backend"] == "cpu" and report["device"]["jax_version"]
  run = report["benchmarks"]["treemaml_step"]
  assert run["returncode"] == 0 and run["report"]["num_tasks"] == 8
  assert set(report["seconds_per_step"]) == {"treemaml_step/maml", "treemaml_step/fixed",
                                             "treemaml_step/learned_threshold"}
  assert all(seconds > 0 for seconds in report["seconds_per_step"].values())
