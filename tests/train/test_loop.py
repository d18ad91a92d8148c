"""The training loop: per-step metrics, non-finite guard, config checks, sharding equivalence."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gnrev import data, train
from gnrev.train import metrics as train_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke_config(**optimizers) -> ml_collections.ConfigDict:
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.optimizers = ml_collections.ConfigDict(optimizers or {"adam": {"name": "adam",
                                                                        "learning_rate": 1e-2}})
  return config


def tiny_step(learning_rate):
  model = train.MLP(num_classes=3, hidden=(4,))
  x = jax.random.normal(jax.random.key(0), (6, 5))
  y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
  params = model.init(jax.random.key(1), x)["params"]
  setup = train.OptimizerSetup(optax.sgd(learning_rate), lambda *args: {})
  state = train.TrainState.create(params, setup.tx.init(params), jax.random.key(2), 3)
  loss = lambda p: train.cross_entropy(model.apply({"params": p}, x), y)
  return train.make_train_step(model, setup, train.classification()), state, x, y, loss


def test_loss_change_is_measured_on_the_same_batch_before_and_after_the_step():
  step, state, x, y, loss = tiny_step(0.5)
  new_state, metrics = step(state, {}, x, y)
  before, after = loss(state.params), loss(new_state.params)
  np.testing.assert_allclose(metrics["train_loss"], before, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_change_pct"], 100 * (after - before) / before,
                             rtol=1e-5)
  assert metrics["skipped"] == 0 and int(new_state.step) == 1


def test_non_finite_step_leaves_params_and_state_unchanged():
  step, state, x, y, _ = tiny_step(jnp.inf)
  new_state, metrics = step(state, {}, x, y)
  assert metrics["skipped"] == 1
  jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, new_state.opt_state, state.opt_state)
  assert int(new_state.step) == 1  # the next step takes the next batch


@pytest.mark.parametrize("field,value,allowed", [
    ("model.name", "resnet", "allowed: autoencoder, cnn, edge_mlp, gnn, logreg, mlp, revmlp"),
    ("data.name", "imagenet", "allowed: cifar10, digits, fashion_mnist"),
    ("optimizers.adam.name", "lbfgs", "allowed: adam, .*sgd"),
])
def test_unknown_names_list_the_valid_ones(field, value, allowed):
  config = smoke_config()
  section, key = field.rsplit(".", 1)
  setattr(eval(f"config.{section}"), key, value)
  with pytest.raises(ValueError, match=f"Unknown .*{value}.*{allowed}"):
    train.check_config(config)


def test_misspelt_optimizer_option_fails_at_start_up_naming_the_run_and_the_allowed_ones():
  config = smoke_config(fl={"name": "fishleg", "learning_rate": 0.1, "aux_lr": 1e-3})
  with pytest.raises(ValueError, match=r"Run 'fl': Unknown field\(s\) aux_lr for optimizer "
                                       r"'fishleg'\. Allowed: name, learning_rate, damping, "
                                       r"aux_learning_rate"):
    train.check_config(config)
  config = smoke_config(fl={"name": "fishleg", "learning_rate": 0.1, "aux_learning_rte": 1e-3})
  with pytest.raises(ValueError, match=r"aux_learning_rte for optimizer 'fishleg'\. Did you mean "
                                       r"aux_learning_rate\? Allowed: name, learning_rate"):
    train.check_config(config)
  config = smoke_config(plain={"name": "sgd"})
  with pytest.raises(ValueError, match="Run 'plain': Optimizer 'sgd' needs a learning_rate"):
    train.check_config(config)


def test_exact_gn_batch_above_the_rank_bound_fails_at_start_up_with_nothing_written(tmp_path):
  # digits: 64 inputs, halves of 32; the linear first block's features have rank <= 32 + 1.
  config = smoke_config(gn={"name": "exact_gn", "learning_rate": 0.1})
  config.model.expansion = 64
  with pytest.raises(ValueError, match=r"Run 'gn': Batch size 64 is too large for the exact "
                                       r"\(cholesky\) GN step: block 0 is linear.* = 33"):
    config.data.batch_size = 64
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  config.optimizers.gn.solver = "svd"
  train.check_config(config)


def test_batch_not_divisible_by_devices_fails_at_start_up(tmp_path):
  config = smoke_config()
  config.data.batch_size = 30
  with pytest.raises(ValueError, match="batch_size=30 must be divisible by the number of devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_sharded_and_single_device_runs_reach_the_same_params(tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py should give 8 CPU devices"
  results = {}
  for num_devices in (1, 8):
    config = smoke_config()
    config.num_devices = num_devices
    results[num_devices] = train.train_and_evaluate(config, str(tmp_path / str(num_devices)))
  sharded, single = results[8]["adam"], results[1]["adam"]
  assert len(sharded["params"]["block_0"]["F"]["W"].sharding.device_set) == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               sharded["params"], single["params"])
  np.testing.assert_allclose(sharded["test_loss"], single["test_loss"], rtol=1e-5)


def test_two_class_evaluation_reports_precision_recall_f1_of_class_1_from_hand_counts():
  # logits [0, x]: events 0, 2, 4 predicted positive; 0, 1 actually positive -> TP = 1.
  model = train.MLP(num_classes=2, hidden=())
  params = {"Dense_0": {"kernel": jnp.array([[0.0, 1.0]]), "bias": jnp.zeros(2)}}
  x = np.array([[1.0], [-1.0], [2.0], [-3.0], [4.0]], np.float32)
  test = data.Dataset(x, np.array([1, 1, 0, 0, 0], np.int32), 2)
  targets = np.eye(2, dtype=np.float32)[test.y]
  # Chunks of 4: the second is padded with 3 copies of event 4 (a false positive) and masked.
  task = train.classification()
  scores = train.evaluate(train.make_eval_step(model, task), params, {}, test, targets, 4,
                          train.make_mesh(1), task)
  assert scores["test_precision"] == pytest.approx(1 / 3)
  assert scores["test_recall"] == pytest.approx(1 / 2)
  assert scores["test_f1"] == pytest.approx(2 * 1 / (3 + 2))
  assert scores["test_accuracy"] == pytest.approx(2 / 5)
  expected_loss = np.mean(np.logaddexp(0, x[:, 0]) - test.y * x[:, 0])
  assert scores["test_loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_binary_scores_are_zero_where_nothing_is_predicted_or_present():
  counts = train_metrics.binary_counts(jnp.array([0, 0, 1]), jnp.array([0, 0, 0]),
                                       jnp.array([1.0, 1.0, 0.0]))
  assert {k: float(v) for k, v in counts.items()} == {
      "true_positives": 0.0, "predicted_positives": 0.0, "actual_positives": 0.0}
  assert train_metrics.binary_scores(counts) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
