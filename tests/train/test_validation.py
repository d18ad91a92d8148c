"""Start-up validation: every family of bad input fails before anything trains, naming the field,
the value and what is allowed (gnrev/train/validation.py, gnrev/data/checks.py)."""

import glob
import json
import math
import os

import ml_collections
import numpy as np
import pytest

from gnrev import data, train
from gnrev.train import optimizers, supervised, validation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = {"exact_gn": {"name": "exact_gn", "learning_rate": 0.1, "solver": "svd"},
        "adam": {"name": "adam", "learning_rate": 1e-3},
        "sgd": {"name": "sgd", "learning_rate": 0.1},
        "gauss_newton": {"name": "gauss_newton", "learning_rate": 0.1},
        "fishleg": {"name": "fishleg", "learning_rate": 0.1}}


def smoke_config() -> ml_collections.ConfigDict:
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.optimizers = ml_collections.ConfigDict(RUNS)
  config.model.memory_mode = "autodiff"  # fishleg and gauss_newton differentiate forwards
  # Not type-safe, as a notebook's config may not be: the checks must catch wrong types too.
  return ml_collections.ConfigDict(config.to_dict(), type_safe=False)


def set_field(config, path: str, value) -> None:
  *sections, key = path.split(".")
  node = config
  for section in sections:
    node = node[section]
  with node.unlocked() if hasattr(node, "unlocked") else _nothing():
    if value is DELETE:
      del node[key]
    else:
      node[key] = value


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


class _Delete:
  def __repr__(self):  # stable test ids across pytest-xdist workers
    return "<deleted>"


DELETE = _Delete()

# (field, bad value, a fragment of what the message says is allowed)
BAD_FIELDS = [
    # Launcher fields: ranges, types, presence.
    ("num_epochs", 0, "an int >= 1"),
    ("num_epochs", -1, "an int >= 1"),
    ("num_epochs", 2.5, "an int >= 1"),
    ("num_epochs", True, "an int >= 1"),
    ("num_epochs", DELETE, "missing; expected an int >= 1"),
    ("log_every", 0, "an int >= 1"),
    ("checkpoint_every", -1, "an int >= 0"),
    ("eval_every", -1, "an int >= 0"),
    ("max_to_keep", 0, "an int >= 1 or None"),
    ("seed", -3, "an int >= 0"),
    ("num_devices", -1, "an int >= 0"),
    # Data fields.
    ("data.batch_size", 0, "an int >= 1"),
    ("data.eval_batch_size", 0, "an int >= 1"),
    ("data.train_subset", -5, "an int >= 0"),
    ("data.seed", -1, "an int >= 0"),
    ("data.data_dir", 3, "a string or None"),
    ("data.options", 7, "a dict of the dataset's own options"),
    # Optimizer options: every optimizer, numbers (NaN, inf, sign, bounds), types, names.
    ("optimizers.adam.learning_rate", math.nan, "a finite number > 0"),
    ("optimizers.adam.learning_rate", -0.1, "a finite number > 0"),
    ("optimizers.sgd.learning_rate", 0.0, "a finite number > 0"),
    ("optimizers.sgd.learning_rate", math.inf, "a finite number > 0"),
    ("optimizers.sgd.learning_rate", "fast", "a finite number > 0"),
    ("optimizers.adam.b1", 1.5, "a finite number in [0, 1)"),
    ("optimizers.adam.b2", -0.1, "a finite number in [0, 1)"),
    ("optimizers.adam.eps", math.nan, "a finite number >= 0"),
    ("optimizers.sgd.momentum", 1.0, "a finite number in [0, 1)"),
    ("optimizers.sgd.nesterov", "yes", "True or False"),
    ("optimizers.exact_gn.solver", "bogus", "one of 'cholesky', 'damped', 'svd'"),
    ("optimizers.exact_gn.loss", "bogus", "one of 'ce', 'ce_identity', 'mse'"),
    ("optimizers.exact_gn.allocation", "bogus", "one of 'full', 'split' or 2 per-block"),
    ("optimizers.exact_gn.allocation", (1.0, 0.5, 0.5), "2 finite per-block weights"),
    ("optimizers.exact_gn.rtol", -1e-2, "a finite number in [0, 1)"),
    ("optimizers.exact_gn.atol", math.inf, "a finite number >= 0"),
    ("optimizers.gauss_newton.loss", "bogus", "one of 'ce', 'ce_identity', 'mse'"),
    ("optimizers.gauss_newton.maxiter", 0, "an int >= 1 or None"),
    ("optimizers.gauss_newton.tol", 0.0, "a finite number > 0"),
    ("optimizers.fishleg.update_aux_every", 0, "an int >= 1"),
    ("optimizers.fishleg.aux_learning_rate", -1e-4, "a finite number > 0"),
    ("optimizers.fishleg.probe", "bogus", "one of 'gaussian', 'gradient'"),
    ("optimizers.fishleg.q_family", "bogus", "one of 'diagonal', 'full', 'kronecker'"),
    ("optimizers.fishleg.precondition_aux", 1, "True or False"),
]


@pytest.mark.parametrize("field,value,allowed", BAD_FIELDS,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_bad_field_fails_naming_the_field_the_value_and_what_is_allowed(field, value, allowed):
  config = smoke_config()
  set_field(config, field, value)
  with pytest.raises(validation.ConfigError) as error:
    train.check_config(config)
  message = str(error.value)
  assert f"config.{field}" in message and allowed in message, message
  if value is not DELETE:
    assert repr(value) in message, message


# (what is changed, its value, a fragment of the message)
BAD_STRUCTURE = [
    ("optimizers.adam.name", "lbfgs", "Unknown optimizer 'lbfgs' (config.optimizers.adam.name); "
                                      "allowed: adam, exact_gn, fishleg"),
    ("optimizers.adam.beta1", 0.9, "Unknown field(s) beta1 for optimizer 'adam'. Allowed: name, "
                                   "learning_rate, b1, b2, eps"),
    ("optimizers.adam.learning_rte", 0.1, "Unknown field(s) learning_rte for optimizer 'adam'. "
                                          "Did you mean learning_rate? Allowed: name,"),
    ("optimizers.fishleg.dampng", 0.1, "Did you mean damping?"),
    ("optimizers.adam.learning_rate", DELETE, "Optimizer 'adam' needs a learning_rate"),
    ("optimizers.adam", 3, "config.optimizers.adam = 3 is not allowed; expected a dict"),
    ("optimizers.a/b", {"name": "sgd", "learning_rate": 0.1}, "a run named 'a/b'"),
    ("optimizers.-x", {"name": "sgd", "learning_rate": 0.1}, "not starting with '.' or '-'"),
    ("optimizers.gn_damped", {"name": "exact_gn", "learning_rate": 0.1, "solver": "damped"},
     "config.optimizers.gn_damped.damping = 0.0 is not allowed; expected a number > 0 with "
     "solver 'damped'"),
    ("data.options", {"sed": 1}, "config.data.options.sed is not a field of dataset 'digits'. "
                                 "Did you mean config.data.options.seed? Allowed: seed, scale."),
    ("data.name", "imagenet", "Unknown dataset 'imagenet' (config.data.name); allowed: cifar10"),
    ("model.name", "resnet", "Unknown model 'resnet' (config.model.name); allowed: autoencoder, cnn"),
    ("model.expansion", -3, "config.model.expansion = -3 is not allowed; expected an int >= 1 or "
                            "None (model 'revmlp')"),
    ("model.num_blocks", 0, "config.model.num_blocks = 0 is not allowed; expected an int >= 1"),
    ("model.memory_mode", "bogus", "config.model ('revmlp'): "),
    ("model.width", 3, "config.model.width is not a field of model 'revmlp'. Allowed: "
                       "num_blocks, expansion"),
    ("model.memory_mode", "invert", "Run 'fishleg': fishleg's steps use jax.jvp, which needs "
                                    "--config.model.memory_mode=autodiff; got 'invert'"),
    ("optimizers.fishleg", DELETE, "Run 'gauss_newton': gauss_newton's steps use jax.jvp"),
]


@pytest.mark.parametrize("field,value,message", BAD_STRUCTURE,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_STRUCTURE])
def test_bad_names_runs_and_models_fail_with_what_is_allowed(field, value, message):
  config = smoke_config()
  if field == "optimizers.fishleg":
    config.model.memory_mode = "invert"
  if field.startswith("optimizers.") and field.split(".")[1] not in RUNS:
    config.optimizers[field.split(".", 1)[1]] = value  # a new run
  else:
    set_field(config, field, value)
  with pytest.raises(validation.ConfigError) as error:
    train.check_config(config)
  assert message in str(error.value), str(error.value)


def test_empty_optimizers_and_a_missing_section_fail():
  config = smoke_config()
  config.optimizers = ml_collections.ConfigDict()
  with pytest.raises(validation.ConfigError, match="config.optimizers is empty"):
    train.check_config(config)
  config = smoke_config()
  del config["data"]
  with pytest.raises(validation.ConfigError, match="config.data is missing"):
    train.check_config(config)


def test_every_launcher_config_and_its_smoke_variant_pass():
  checked = []
  for name in ("default.py", "cnn_mnist1d.py", "graph_returns.py"):
    for arg in (None, "smoke"):
      config = train.load_config(os.path.join(REPO, "configs", name), arg)
      train.check_config(config)  # raises ConfigError on the first bad field
      checked.append((name, arg, sorted(config.optimizers)))
  assert len(checked) == 6 and all(runs for _, _, runs in checked), checked


def every_config_and_variant():
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    if os.path.basename(path) != "common.py":
      for arg in (None, "smoke"):
        yield path, arg


def test_every_config_file_and_its_smoke_variant_pass_the_field_checks():
  checked = 0
  for path, arg in every_config_and_variant():
    config = train.load_config(path, arg)
    validation.check_config(config, train.build_task(config))  # raises on the first bad field
    checked += 1
  assert checked >= 18, checked


TREEMAML = os.path.join(REPO, "configs", "treemaml_linear.py")
CNN = os.path.join(REPO, "configs", "cnn_mnist1d.py")
# A config file's typos and bad values, refused as the command line's are: (config file, where
# the bad value goes, the value, the message).
CONFIG_FILE_FAULTS = [
    (None, "num_epoch", 3, "config.num_epoch is not a field of the config. Did you mean "
                           "config.num_epochs? Allowed: seed, num_epochs"),
    (None, "data.batchsize", 3, "config.data.batchsize is not a field of config.data. Did you "
                                "mean config.data.batch_size? Allowed: name, data_dir, batch_size"),
    (None, "early_stoping", {"patience": 3}, "config.early_stoping is not a field of the config. "
                                             "Did you mean config.early_stopping?"),
    (None, "early_stopping", {"patience": 2, "metrc": "val_loss"},
     "config.early_stopping.metrc is not a field of config.early_stopping. Did you mean "
     "config.early_stopping.metric? Allowed: metric, patience, mode."),
    (None, "early_stopping", {"patience": -1},
     "config.early_stopping.patience = -1 is not allowed; expected an int >= 0."),
    (None, "early_stopping", {"patience": 2, "mode": "lowest"},
     "config.early_stopping.mode = 'lowest' is not allowed; expected one of 'max', 'min'."),
    (None, "data.batch_size", "32", "config.data.batch_size = '32' is not allowed; expected an "
                                    "int >= 1."),
    (None, "model.init_std", math.inf, "config.model.init_std = inf is not allowed; expected a "
                                       "finite number"),
    (None, "model.expansio", 8, "config.model.expansio is not a field of model 'revmlp'. Did you "
                                "mean config.model.expansion?"),
    (None, "data.options", {"seed": math.nan}, "config.data.options.seed = nan is not allowed"),
    (CNN, "model.features", (0,), "config.model.features = (0,) is not allowed; expected a list "
                                  "or tuple, each an int >= 1 (model 'cnn')."),
    (CNN, "model.features", (16, "32"), "config.model.features = (16, '32') is not allowed"),
    (TREEMAML, "task.first_order", "no", "config.task.first_order = 'no' is not allowed; "
                                         "expected True or False (task 'meta_learning')."),
    (TREEMAML, "task.inner_lrs", (), "config.task.inner_lrs = () is not allowed; expected a "
                                     "non-empty list or tuple, each a finite number >= 0"),
    (TREEMAML, "task.inner_lrs", (0.1, math.nan), "config.task.inner_lrs = (0.1, nan) is not "
                                                  "allowed"),
    (TREEMAML, "task.inner_lr", (0.1,), "config.task.inner_lr is not a field of task "
                                        "'meta_learning'. Did you mean config.task.inner_lrs?"),
    (TREEMAML, "task.hidden", (40, 0), "config.task.hidden = (40, 0) is not allowed"),
    (TREEMAML, "task.family.noise_std", math.inf, "config.task.family.noise_std = inf is not "
                                                  "allowed; expected a finite number"),
    (TREEMAML, "meta", {"inner_lrs": (0.1,)}, "config.meta is not a field of the config."),
]


@pytest.mark.parametrize("path,field,value,message", CONFIG_FILE_FAULTS,
                         ids=[f"{f}={v!r}" for _, f, v, _ in CONFIG_FILE_FAULTS])
def test_config_file_typos_types_ranges_and_non_finite_values_fail_naming_the_field(
    path, field, value, message):
  config = train.load_config(path or os.path.join(REPO, "configs", "default.py"), "smoke")
  config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)  # as a file may hold it
  set_field(config, field, value)
  with pytest.raises(validation.ConfigError) as error:
    validation.check_config(config, train.build_task(config))
  assert message in str(error.value), str(error.value)


def dataset(n=16, d=8, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return data.Dataset(rng.standard_normal((n, d)).astype(np.float32),
                      (np.arange(n) % num_classes).astype(np.int32), num_classes)


def data_config(**model):
  config = smoke_config()
  config.optimizers = ml_collections.ConfigDict({"adam": RUNS["adam"]})
  config.data.batch_size, config.data.train_subset = 8, 0
  config.model.expansion = 16
  for key, value in model.items():
    config.model[key] = value
  return config


def with_(ds, **fields):
  return ds._replace(**fields)


BAD_DATA = [
    ("label above range", lambda d: with_(d, y=np.where(np.arange(16) == 5, 3, d.y)), None,
     "dataset 'digits' (train split): label 3 at index 5 is outside [0, 3)"),
    ("negative label", lambda d: with_(d, y=np.where(np.arange(16) == 2, -1, d.y)), None,
     "label -1 at index 2 is outside [0, 3)"),
    ("float labels", lambda d: with_(d, y=d.y.astype(np.float32)), None,
     "labels must be integers"),
    ("NaN input", lambda d: with_(d, x=np.where(np.arange(16)[:, None] == 4, np.nan, d.x)), None,
     "input 4 holds non-finite values"),
    ("NaN graph feature", lambda d: with_(d, variables={"graph": {"customer_features": np.array(
        [[1.0], [np.nan]], np.float32)}}), None,
     "dataset 'digits' (train split): variables.graph.customer_features row 1 holds non-finite"),
    ("empty split", lambda d: with_(d, x=d.x[:0], y=d.y[:0]), None, "holds no examples"),
    ("inputs and labels differ", lambda d: with_(d, y=d.y[:10]), None,
     "16 inputs but 10 labels"),
    ("batch above examples", lambda d: d, ("data.batch_size", 32),
     "config.data.batch_size = 32 is not allowed; expected at most the 16 training examples"),
    ("subset above examples", lambda d: d, ("data.train_subset", 100),
     "config.data.train_subset = 100 is not allowed; expected at most the 16 training examples"),
]


@pytest.mark.parametrize("case,change,field,message", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_fails_before_training_naming_the_split_and_what_is_allowed(case, change, field,
                                                                             message):
  del case
  config = data_config()
  if field:
    set_field(config, *field)
  with pytest.raises(validation.ConfigError) as error:
    validation.check_data(config, train.classification(), change(dataset()), dataset(seed=1))
  assert message in str(error.value), str(error.value)


def test_a_model_that_does_not_fit_the_data_fails_before_training():
  # A RevMLP's fixed head maps its d = 8 features to at most 8 classes.
  twelve = lambda seed: with_(dataset(seed=seed), num_classes=12)
  with pytest.raises(validation.ConfigError,
                     match=r"config.model \('revmlp'\) does not fit dataset 'digits' \(examples "
                           r"of shape \(8,\), 12 classes\)"):
    validation.check_data(data_config(), train.classification(), twelve(0), twelve(1))


@pytest.mark.parametrize("field,value,message", [
    ("model.expansion", 10**9, "config.model.expansion = 1000000000 needs about "),
    ("data.eval_batch_size", 10**11, "config.data.eval_batch_size = 100000000000 needs about "),
])
def test_a_size_beyond_memory_fails_naming_the_field_and_the_estimate_before_allocating(
    field, value, message):
  config = data_config()
  set_field(config, field, value)
  with pytest.raises(validation.ConfigError) as error:
    validation.check_data(config, train.classification(), dataset(), dataset(seed=1))
  assert message in str(error.value) and "GiB of memory" in str(error.value), str(error.value)
  assert "lower it" in str(error.value), str(error.value)


def test_train_and_test_shapes_must_match():
  with pytest.raises(validation.ConfigError, match=r"examples of shape \(8,\) and 3 classes, the "
                                                   r"test split \(6,\) and 3"):
    validation.check_data(data_config(), train.classification(), dataset(), dataset(d=6))


def test_exact_gn_cholesky_batch_above_the_linear_first_blocks_rank_bound_fails():
  # d = 8: the linear first block's feature matrices have rank <= d/2 + 1 = 5, although the
  # expansion (16) would allow 17.
  config = data_config()
  config.optimizers = ml_collections.ConfigDict({"gn": {"name": "exact_gn", "learning_rate": 0.1,
                                                        "solver": "cholesky"}})
  config.data.batch_size = config.data.eval_batch_size = 6
  task, mesh = train.classification(), train.make_mesh(1)
  splits = supervised.Splits(dataset(), None, dataset())
  options = {"gn": train.optimizer_options(config.optimizers.gn)}
  with pytest.raises(ValueError, match=r"Run 'gn': Batch size 6 is too large .* rank <= "
                                       r"min\(input half, expansion\) \+ 1 = 5"):
    task.check(config, splits, mesh, options)
  config.data.batch_size = 5
  task.check(config, splits, mesh, options)
  config.model.linear_first_block = False
  config.data.batch_size = 16
  task.check(config, splits, mesh, options)  # ReLU blocks: expansion + 1 = 17


def test_a_failing_check_trains_nothing_and_writes_nothing(tmp_path):
  config = data_config()
  config.data.train_subset = 5000  # digits has 1,437 training examples
  workdir = tmp_path / "never"
  with pytest.raises(validation.ConfigError, match="train_subset = 5000 .* at most the 1437"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def write_workdir(tmp_path, config):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  return str(workdir)


@pytest.mark.parametrize("field,value,named", [
    ("model.expansion", 32, "Differing: model.expansion (64 in the workdir, 32 now)."),
    ("data.batch_size", 16, "data.batch_size (32 in the workdir, 16 now)"),
    ("seed", 7, "seed (42 in the workdir, 7 now)"),
    ("optimizers.adam.learning_rate", 0.5, "optimizers.adam.learning_rate (0.001 in the workdir, "
                                           "0.5 now)"),
    ("optimizers.adam.b1", 0.5, "optimizers.adam.b1 (0.9 in the workdir, 0.5 now)"),
    ("optimizers.sgd.name", "adam", "optimizers.sgd.name ('sgd' in the workdir, 'adam' now)"),
    ("early_stopping", {"patience": 3}, "early_stopping ('<absent>' in the workdir, "),
    ("data.validation_fraction", 0.25, "data.validation_fraction (0.0 in the workdir, 0.25 now)"),
    ("model.init_std", 0.5, "model.init_std (0.001 in the workdir, 0.5 now)"),
    ("init_from", {"workdir": "elsewhere", "run": "adam"}, "init_from ('<absent>' in the workdir"),
])
def test_resume_with_an_incompatible_config_names_the_fields_and_leaves_the_workdir(
    tmp_path, field, value, named):
  config = smoke_config()
  workdir = write_workdir(tmp_path, config)
  before = (tmp_path / "w" / "config.json").read_bytes()
  set_field(config, field, value)
  if field == "optimizers.sgd.name":
    del config.optimizers.sgd["learning_rate"]
    config.optimizers.sgd.learning_rate = 0.1
  with pytest.raises(validation.ConfigError) as error:
    validation.check_resume(config, workdir)
  assert named in str(error.value) and "Use a new --workdir" in str(error.value), str(error.value)
  assert (tmp_path / "w" / "config.json").read_bytes() == before


def test_resume_allows_schedule_changes_added_runs_and_spelled_out_defaults(tmp_path):
  config = smoke_config()
  workdir = write_workdir(tmp_path, config)
  config.num_epochs, config.log_every, config.checkpoint_every, config.max_to_keep = 9, 3, 2, 5
  config.data.eval_batch_size, config.num_devices = 32, 1
  config.optimizers.adam.b1 = 0.9                       # the default, now spelled out
  config.optimizers.extra = {"name": "sgd", "learning_rate": 0.2}
  config.data.validation_fraction = 0.0                 # a trainer default, now spelled out
  changes = validation.check_resume(config, workdir)
  assert "num_epochs (1 -> 9)" in changes and "data.eval_batch_size (64 -> 32)" in changes
  assert len(changes) == 6, changes  # recorded: every changed field, nothing else
  (tmp_path / "w" / "config.json").write_text("{not json")
  with pytest.raises(validation.ConfigError, match="config.json is unreadable"):
    validation.check_resume(config, workdir)
  assert json.loads(smoke_config().to_json_best_effort())  # the file format it compares with


def test_an_optional_optimizer_that_is_not_installed_says_how_to_install_it(monkeypatch):
  monkeypatch.delitem(optimizers.OPTIMIZERS, "psgd_kron", raising=False)
  monkeypatch.delitem(optimizers.OPTIONS, "psgd_kron", raising=False)
  config = smoke_config()
  config.optimizers.adam.name = "psgd_kron"
  with pytest.raises(validation.ConfigError, match=r"Run 'adam': Optimizer 'psgd_kron' needs "
                                                   r"psgdax \(pip install 'gnrev\[peers\]'\)"):
    validation.check_config(config, train.build_task(config))
