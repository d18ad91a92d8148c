"""Pruning in the trainer: init_from, scheduled pruning, masks through fine-tuning and resume."""

import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from gnrev import prune, train
from gnrev.train import pruning, sharding, tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(**pruning_fields) -> ml_collections.ConfigDict:
  config = train.load_config(os.path.join(REPO, "configs", "pruning.py"), "smoke")
  config.data.name = "digits"
  config.data.train_subset = 96
  config.data.eval_batch_size = 120
  config.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (6,)})
  if pruning_fields:
    config.init_from = ml_collections.ConfigDict({"workdir": "", "run": "adam"})
    config.optimizers = ml_collections.ConfigDict({"tune": {
        "name": "adam", "learning_rate": 1e-2, "pruning": pruning_fields}})
  return config


@pytest.fixture(scope="module")
def dense_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dense"))
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir


def pruning_config(dense_workdir, **fields):
  config = tiny_config(**fields)
  config.init_from.workdir = dense_workdir
  return config


def kernels(params):
  return [p for p, e in zip(jax.tree.leaves(params), jax.tree.leaves(prune.prunable(params)))
          if e]


@pytest.mark.x64
def test_one_shot_fishleg_surgeon_prunes_as_prune_fishleg_surgeon_called_directly(dense_workdir):
  fields = {"method": "fishleg_surgeon", "sparsity": 0.6, "ranking": "layer", "fit_steps": 4,
            "aux_batch_size": 16, "fisher_examples": 64, "damping": 1e-2,
            "aux_learning_rate": 1e-3}
  config = pruning_config(dense_workdir, **fields)
  task = tasks.build_task(config)
  train_set, _, test_set = train.load_splits(config, task)
  program = train.supervised_program(config, "tune", task, train_set, test_set,
                                     sharding.make_mesh(1))
  dense = train.load_params(os.path.join(dense_workdir, "adam", "checkpoints"))
  jax.tree.map(np.testing.assert_array_equal, program.state.params, dense)
  state, record = program.after_step(program.state, 0, {"step": 0})

  model = train.build_model(config.model, 10)
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  x, y = train_set.x[:64], train_set.y[:64]
  likelihood = task.likelihood
  masks, expected = prune.fishleg_surgeon(
      apply_fn, dense, x, likelihood, 0.6, rng=pruning.pruning_key(program.state.rng),
      damping=1e-2, num_aux_steps=4, q_family="kronecker", ranking="layer",
      mean_squared_grads=prune.mean_squared_gradients(apply_fn, dense, x, y, likelihood),
      batch_size=16, aux_learning_rate=1e-3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state.params, expected)
  jax.tree.map(np.testing.assert_array_equal, state.pruning.masks, masks)
  assert record["sparsity"] == pytest.approx(0.6, abs=1e-2)
  assert {"pruned_test_accuracy", "surgeon_aux_loss", "prune_target"} <= set(record)
  # The keep_masked state of the optimizer holds the same masks.
  kept = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(
      s, prune.KeepMaskedState)) if isinstance(s, prune.KeepMaskedState)]
  jax.tree.map(np.testing.assert_array_equal, kept[0].masks, masks)
  # The hook's own step, afresh from the same state, is the same step (nothing is cached).
  hook = pruning.build_hook(config, "tune", model, {}, task, train_set, program.evaluate)
  fresh, _, _ = hook.prune_state(program.state, 0.6)
  jax.tree.map(np.testing.assert_array_equal, fresh.params, state.params)


def test_gradual_pruning_masks_stay_zero_through_fine_tuning(dense_workdir, tmp_path):
  config = pruning_config(dense_workdir, method="magnitude", sparsity=0.7, schedule="cubic",
                          num_steps=2, every=1, sweep=(0.3, 0.5))
  config.num_epochs = 2  # 3 steps per epoch: pruned at steps 0 and 1, fine-tuned to step 6
  result = train.train_and_evaluate(config, str(tmp_path))["tune"]
  assert result["step"] == 6
  flat = np.concatenate([np.ravel(k) for k in kernels(result["params"])])
  assert np.sum(flat == 0) == round(0.7 * flat.size)
  records = [r for r in train.read_metrics(str(tmp_path)) if r["run"] == "tune"]
  pruned = [r for r in records if "prune_target" in r]
  assert [r["step"] for r in pruned] == [0, 1]
  assert pruned[-1]["sparsity"] == pytest.approx(0.7, abs=2e-3)
  assert {"sweep30_test_accuracy", "sweep50_test_accuracy"} <= set(pruned[0])
  assert all(r["sparsity"] == pytest.approx(0.7, abs=2e-3) for r in records
             if "test_accuracy" in r and r["step"] >= 1)


def test_resume_with_masks_and_surgeon_state_is_bit_identical(dense_workdir, tmp_path):
  config = pruning_config(dense_workdir, method="fishleg_surgeon", sparsity=0.8,
                          schedule="cubic", num_steps=3, every=2, fit_steps=3, refine_steps=2,
                          aux_batch_size=8, fisher_examples=32)
  config.num_epochs = 2
  config.checkpoint_every = 2
  config.max_to_keep = None
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"))["tune"]
  # Interrupted after step 2: later checkpoints gone; the resumed run must restore the masks and
  # Q (refined again before the step-4 pruning) from the step-2 checkpoint.
  shutil.copytree(tmp_path / "whole", tmp_path / "cut")
  for step in (4, 6):
    shutil.rmtree(tmp_path / "cut" / "tune" / "checkpoints" / str(step))
  resumed = train.train_and_evaluate(config, str(tmp_path / "cut"))["tune"]
  jax.tree.map(np.testing.assert_array_equal, resumed["params"], whole["params"])
  assert resumed["test_accuracy"] == whole["test_accuracy"]
  untimed = lambda path: [{k: v for k, v in r.items() if k != "prune_seconds"}
                          for r in train.read_metrics(str(path))]
  assert untimed(tmp_path / "cut") == untimed(tmp_path / "whole")


def test_init_from_without_pruning_starts_from_the_checkpoint(dense_workdir, tmp_path):
  config = tiny_config()
  config.init_from = ml_collections.ConfigDict({"workdir": dense_workdir, "run": "adam"})
  train.train_and_evaluate(config, str(tmp_path))
  first = train.read_metrics(str(tmp_path))[0]
  dense_final = [r for r in train.read_metrics(dense_workdir) if "test_loss" in r][-1]
  assert first["step"] == 0 and first["test_loss"] == dense_final["test_loss"]


@pytest.mark.parametrize("fields, message", [
    ({"method": "obs"}, "pruning.method = 'obs' is not allowed; expected one of "
                        "'diagonal_fisher', 'exact_obs', 'fishleg_surgeon'"),
    ({"sparsity": 1.0}, r"pruning.sparsity = 1.0 is not allowed; expected a finite number in "
                        r"\[0, 1\)"),
    ({"ranking": "row"}, "pruning.ranking = 'row' is not allowed; expected one of 'global', "
                         "'layer'"),
    ({"schedule": "cubic", "num_steps": 3, "every": 5}, "schedule's last step \\(10"),
    ({"num_steps": 3}, "num_steps=3 needs schedule 'cubic'"),
    ({"fit_steps": 0}, "pruning.fit_steps = 0 is not allowed; expected an int >= 1"),
    ({"damping": -1.0}, "pruning.damping = -1.0 is not allowed; expected a finite number > 0"),
    ({"q_family": "block"}, "pruning.q_family = 'block' is not allowed"),
    ({"sweep": (0.5, 1.5)}, r"pruning.sweep = \(0.5, 1.5\) is not allowed; expected a list or "
                            r"tuple, each a finite number in \[0, 1\)"),
    ({"lr": 1.0}, "Run 'tune': unknown pruning field\\(s\\) lr. Allowed: method"),
])
def test_bad_pruning_sections_fail_at_start_up_naming_the_field(dense_workdir, fields, message):
  config = pruning_config(dense_workdir, **{"method": "magnitude", **fields})
  with pytest.raises(ValueError, match=message):
    train.check_config(config)


def test_bad_init_from_and_exact_obs_on_a_large_model_fail_at_start_up(dense_workdir, tmp_path):
  config = pruning_config(dense_workdir, method="magnitude")
  config.init_from.run = "sgd"
  with pytest.raises(ValueError, match="init_from: no checkpoint of run 'sgd'"):
    train.check_config(config)
  config = pruning_config(dense_workdir, method="exact_obs")
  config.model.hidden = (2000,)
  with pytest.raises(ValueError, match="'exact_obs' inverts a dense P x P Fisher"):
    train.check_config(config)
  config = pruning_config(dense_workdir, method="magnitude")
  config.model.hidden = (7,)
  with pytest.raises(ValueError, match="do not fit this run's model"):
    train.train_and_evaluate(config, str(tmp_path))
