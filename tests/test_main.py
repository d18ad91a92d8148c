"""The real entry point, ``python -m gnrev.main``: smoke runs, overrides, errors on one line.

Kill-and-resume through the launcher is tested in tests/train/test_resume.py.

Every file of configs/ but common.py (the fields and helpers they share) is a launcher config.
"""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags

from gnrev import config_flag, train
from gnrev.train import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_CONFIGS = sorted(path for path in glob.glob(os.path.join(REPO, "configs", "*.py"))
                          if os.path.basename(path) != "common.py")
# Same devices as this process (tests/conftest.py), so subprocess and in-process runs match.
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
       "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO, "MPLBACKEND": "Agg"}
MAIN = [sys.executable, "-m", "gnrev.main"]


def test_every_launcher_config_runs_end_to_end_and_writes_its_artefacts(tmp_path):
  assert LAUNCHER_CONFIGS, "configs/ should hold launcher configs"
  runs = {os.path.basename(path): subprocess.Popen(
      MAIN + [f"--config={path}:smoke", f"--workdir={tmp_path / os.path.basename(path)}"],
      cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for path in LAUNCHER_CONFIGS}
  for name, process in runs.items():
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, f"{name} failed:\n{output[-3000:]}"
    workdir = tmp_path / name
    assert {"config.json", "metrics.jsonl", "curves.png"} <= set(os.listdir(workdir))
    config = train.load_config(os.path.join(REPO, "configs", name), "smoke")
    records = train.read_metrics(str(workdir))
    assert {r["run"] for r in records} == set(config.optimizers)
    assert all("test_loss" in r for r in records if r["step"] == records[-1]["step"])


def parse_config_flags(argv):
  flag_values = flags.FlagValues()
  config_flag.define_config_flag("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return config_flag.finish_config_flag("config", flag_values)


def test_config_override_typo_fails_with_ml_collections_suggestion():
  path = os.path.join(REPO, "configs", "default.py")
  with pytest.raises(AttributeError, match='Did you mean "num_epochs" instead of "num_epoch"'):
    parse_config_flags(["main", f"--config={path}:smoke", "--config.num_epoch=3"])
  config = parse_config_flags(
      ["main", f"--config={path}:smoke", "--config.optimizers.adam.learning_rate=0.5"])
  assert config.optimizers.adam.learning_rate == 0.5 and config.data.train_subset == 128


def test_every_optimizer_option_is_settable_although_the_config_file_omits_it():
  path = os.path.join(REPO, "configs", "cnn_mnist1d.py")  # spells out none of these options
  config = parse_config_flags(["main", f"--config={path}:smoke", "--config.optimizers.adam.b1=0.5",
                               "--config.optimizers.sgd.nesterov=True",
                               "--config.optimizers.fishleg.q_family=diagonal"])
  assert config.optimizers.adam.b1 == 0.5 and config.optimizers.adam.b2 == 0.999
  assert config.optimizers.sgd.nesterov is True
  assert config.optimizers.fishleg.q_family == "diagonal"
  for run, run_config in config.optimizers.items():  # every option present, with its default
    assert set(train.OPTIONS[run_config.name]) <= set(run_config), run
  train.check_config(config)
  # An option whose default is None takes a value too.
  config = parse_config_flags(["main", f"--config={path}:smoke",
                               "--config.optimizers.gauss_newton.maxiter=3"])
  assert config.optimizers.gauss_newton.maxiter == 3
  # Renaming a run's optimizer drops the options filled in for the old one, not those set.
  renamed = ["main", f"--config={path}:smoke", "--config.optimizers.adam.name=sgd"]
  config = parse_config_flags(renamed)
  assert dict(config.optimizers.adam) == {"name": "sgd", "learning_rate": 1e-3}
  config = parse_config_flags(renamed + ["--config.optimizers.adam.b1=0.5"])
  with pytest.raises(ValueError, match=r"Run 'adam': Unknown field\(s\) b1 for optimizer 'sgd'"):
    train.check_config(config)


def test_options_the_file_leaves_at_none_and_per_block_allocations_are_settable():
  path = os.path.join(REPO, "configs", "default.py")  # no momentum; allocation "full"
  config = parse_config_flags(["main", f"--config={path}:smoke,all",
                               "--config.optimizers.sgd.momentum=0.9",
                               "--config.optimizers.exact_gn.allocation=(0.7,0.3)",
                               "--config.optimizers.fishleg.init_scale=0.5"])
  assert config.optimizers.sgd.momentum == 0.9 and config.optimizers.fishleg.init_scale == 0.5
  assert config.optimizers.exact_gn.allocation == (0.7, 0.3)
  validation.check_config(config, train.build_task(config))
  config = parse_config_flags(["main", f"--config={path}:smoke",
                               "--config.optimizers.exact_gn.allocation=split"])
  assert config.optimizers.exact_gn.allocation == "split" and config.optimizers.sgd.momentum is None
  config = parse_config_flags(["main", f"--config={path}:smoke",
                               "--config.optimizers.exact_gn.allocation=(0.7,0.2,0.1)"])
  with pytest.raises(train.ConfigError, match=r"allocation = \(0.7, 0.2, 0.1\) is not allowed; "
                                              r"expected one of 'full', 'split' or 2 finite"):
    validation.check_config(config, train.build_task(config))


def test_trainer_optional_fields_and_run_subsets_are_settable_from_the_command_line():
  path = os.path.join(REPO, "configs", "default.py")  # spells out no validation split
  config = parse_config_flags(["main", f"--config={path}:smoke,all,runs=sgd+fishleg",
                               "--config.data.validation_fraction=0.25"])
  assert config.data.validation_fraction == 0.25 and config.data.validation_seed == 0
  assert set(config.optimizers) == {"sgd", "fishleg"}
  train.check_config(config)
  with pytest.raises(ValueError, match=r"Unknown run\(s\) lbfgs; allowed: .*gauss_newton"):
    train.load_config(path, "all,runs=adam+lbfgs")


def test_bad_input_is_one_line_on_stderr_and_exit_1_traceback_on_request(tmp_path):
  path = os.path.join(REPO, "configs", "default.py")
  args = MAIN + [f"--config={path}:smoke", f"--workdir={tmp_path / 'w'}",
                 "--config.optimizers.adam.b1=1.5"]
  quiet = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert quiet.returncode == 1
  assert quiet.stderr.splitlines()[-1].startswith(
      "gnrev.main: error: config.optimizers.adam.b1 = 1.5 is not allowed; expected a finite "
      "number in [0, 1)"), quiet.stderr
  assert "Traceback" not in quiet.stderr and not (tmp_path / "w").exists()
  loud = subprocess.run(args, cwd=REPO, env={**ENV, "GNREV_TRACEBACK": "1"}, capture_output=True,
                        text=True, timeout=300)
  assert loud.returncode == 1 and "Traceback" in loud.stderr and "ConfigError" in loud.stderr


CONFIG_FILE = """import ml_collections
from configs import default


def get_config():
  config = default.get_config("smoke").to_dict()
  {change}
  return ml_collections.ConfigDict(config)
"""


@pytest.mark.parametrize("change,message", [
    ('config["data"]["batch_size"] = "32"',
     "config.data.batch_size = '32' is not allowed; expected an int >= 1."),
    ('config["num_epoch"] = 3',
     "config.num_epoch is not a field of the config. Did you mean config.num_epochs?"),
], ids=["string_batch_size", "misspelt_field"])
def test_a_config_file_gets_the_command_lines_checks_on_one_line(tmp_path, change, message):
  path = tmp_path / "config.py"
  path.write_text(CONFIG_FILE.replace("{change}", change))
  result = subprocess.run(MAIN + [f"--config={path}", f"--workdir={tmp_path / 'w'}"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr
  assert result.stderr.splitlines()[-1].startswith(f"gnrev.main: error: {message}"), result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


def test_help_lists_the_config_flag_and_exits_0():
  result = subprocess.run(MAIN + ["--help"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr
  assert "--config:" in result.stdout and "--workdir:" in result.stdout


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
  path = os.path.join(REPO, "configs", "default.py")
  (tmp_path / "a_file").write_text("")
  workdir_is_file = subprocess.run(
      MAIN + [f"--config={path}:smoke", f"--workdir={tmp_path / 'a_file'}"], cwd=REPO, env=ENV,
      capture_output=True, text=True, timeout=300)
  assert workdir_is_file.returncode == 1
  assert workdir_is_file.stderr.splitlines()[-1].startswith(
      f"gnrev.main: error: workdir '{tmp_path / 'a_file'}' exists and is a file"), (
          workdir_is_file.stderr)
  assert "Traceback" not in workdir_is_file.stderr and "libtpu" not in workdir_is_file.stderr
  misspelt = subprocess.run(
      MAIN + [f"--config={path}:smoke", f"--workdir={tmp_path / 'w'}",
              "--config.optimizers.adam.learning_rte=1"], cwd=REPO, env=ENV,
      capture_output=True, text=True, timeout=300)
  assert misspelt.returncode == 1 and misspelt.stderr.splitlines()[-1].startswith(
      "gnrev.main: error: unknown config field: 'learning_rte' Did you mean \"learning_rate\" "
      "instead of \"learning_rte\"?"), misspelt.stderr
  # A config file that fails with a bug (not a bad value) shows where.
  buggy = tmp_path / "buggy.py"
  buggy.write_text("def get_config():\n  return {}.missing_attribute\n")
  bug = subprocess.run(MAIN + [f"--config={buggy}", f"--workdir={tmp_path / 'w'}"], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=300)
  assert bug.returncode == 1 and "Traceback" in bug.stderr and "missing_attribute" in bug.stderr
