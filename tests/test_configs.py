"""configs/: JAX-free config files built from configs/common.py, variants derived by import."""

import glob
import os
import subprocess
import sys

import pytest

from configs import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


def test_loading_any_config_imports_no_jax():
  script = ("import importlib, sys\n"
            f"for name in {CONFIGS!r}:\n"
            "  module = importlib.import_module('configs.' + name)\n"
            "  if hasattr(module, 'get_config'):\n"
            "    module.get_config('smoke')\n"
            "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'gnrev') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stderr


def test_config_argument_is_parsed_with_the_defaults_types():
  options = common.parse_arg("smoke,batch=32,name=x", smoke=False, batch=128, name="")
  assert options.smoke is True and options.batch == 32 and options.name == "x"
  with pytest.raises(ValueError, match="Unknown config argument 'smok'; allowed: batch, smoke"):
    common.parse_arg("smok", smoke=False, batch=128)


def test_run_selection_keeps_the_named_runs_in_the_given_order():
  assert list(common.select_runs({"a": 1, "b": 2, "c": 3}, "c+a")) == ["c", "a"]
  assert common.select_runs({"a": 1}, "") == {"a": 1}
  with pytest.raises(ValueError, match=r"Unknown run\(s\) z; allowed: a, b"):
    common.select_runs({"a": 1, "b": 2}, "a+z")


def test_trainer_fields_have_one_definition_and_variants_change_only_what_differs():
  from configs import treemaml_linear, treemaml_sinusoid  # pylint: disable=import-outside-toplevel
  base = common.trainer_config()
  assert base.checkpoint_every == 0 and base.eval_every == 0  # 0: once per epoch
  linear, sinusoid = treemaml_linear.get_config("seed=1"), treemaml_sinusoid.get_config("seed=1")
  assert sinusoid.task.family.kind == "sinusoid" and linear.task.family.kind == "linear"
  assert sinusoid.seed == linear.seed == 1 and set(sinusoid.optimizers) == set(linear.optimizers)
