"""Tasks: reconstruction and meta-learning through the one trainer, validation split, early stop."""

import inspect
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import curvature, data, meta, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reconstruction_config(likelihood="bernoulli", **runs):
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.task = ml_collections.ConfigDict({"name": "reconstruction", "likelihood": likelihood})
  config.data.options = ml_collections.ConfigDict({"scale": "unit"})
  config.data.train_subset = 64
  config.num_devices = 1
  config.model = ml_collections.ConfigDict({"name": "autoencoder", "encoder_widths": (8,),
                                            "code_size": 3})
  config.optimizers = ml_collections.ConfigDict(runs or {
      "adam": {"name": "adam", "learning_rate": 1e-2},
      # The earlier SGD warm start (Q_0 = I, no trust ratio): FishLeg's defaults take
      # learning rate 5e-4 with Q_0 = I / damping.
      "fishleg": {"name": "fishleg", "learning_rate": 0.05, "damping": 0.1,
                  "aux_learning_rate": 1e-3, "init_scale": 1.0, "max_newton_steps": None}})
  return config


def test_reconstruction_trains_autoencoders_through_the_trainer(tmp_path):
  config = reconstruction_config()
  results = train.train_and_evaluate(config, str(tmp_path))
  records = train.read_metrics(str(tmp_path))
  for run in ("adam", "fishleg"):
    start = next(r for r in records if r["run"] == run and r["step"] == 0)
    assert results[run]["test_loss"] < start["test_loss"]
    assert np.isfinite(results[run]["test_mse"]) and "epoch_train_mse" in records[-1]
  assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.x64
def test_fishleg_fisher_product_uses_the_tasks_bernoulli_likelihood():
  task = train.reconstruction("bernoulli")
  model = train.Autoencoder(num_outputs=4, encoder_widths=(3,), code_size=2)
  x = jax.random.uniform(jax.random.key(0), (5, 4), jnp.float64)
  params = jax.tree.map(lambda a: a.astype(jnp.float64),
                        model.init(jax.random.key(1), x)["params"])
  flat, unravel = ravel_pytree(params)
  jacobian = jax.jacfwd(lambda p: model.apply({"params": unravel(p)}, x))(flat)  # (n, d, P)
  p = jax.nn.sigmoid(model.apply({"params": params}, x))
  fisher = jnp.einsum("ndp,nd,ndq->pq", jacobian, p * (1 - p), jacobian) / x.shape[0]
  setup = train.build_optimizer(ml_collections.ConfigDict({"name": "fishleg",
                                                           "learning_rate": 0.1}), model, task)
  fvp = setup.extra_args(params, {}, (x, x), jax.random.key(2))["fvp_fn"]
  v = jax.random.normal(jax.random.key(3), flat.shape, jnp.float64)
  np.testing.assert_allclose(ravel_pytree(fvp(unravel(v)))[0], fisher @ v, rtol=1e-10,
                             atol=1e-12)


@pytest.mark.parametrize("likelihood,sigma", [("bernoulli", 1.0), ("gaussian", 0.5)])
def test_reconstruction_evaluation_is_the_mean_per_example_nll_and_pixel_error(likelihood, sigma):
  task = train.reconstruction(likelihood, sigma)
  model = train.Autoencoder(num_outputs=6, encoder_widths=(4,), code_size=2)
  x = np.asarray(jax.random.uniform(jax.random.key(0), (7, 3, 2, 1)), np.float32)
  split = data.Dataset(x, np.zeros(7, np.int32), 10)
  params = model.init(jax.random.key(1), x)["params"]
  targets = task.targets(split)
  scores = train.evaluate(train.make_eval_step(model, task), params, {}, split, targets, 4,
                          train.make_mesh(1), task)
  outputs = model.apply({"params": params}, x)
  lik = curvature.bernoulli() if likelihood == "bernoulli" else curvature.gaussian(sigma)
  mean = jax.nn.sigmoid(outputs) if likelihood == "bernoulli" else outputs
  assert scores["test_loss"] == pytest.approx(float(lik.nll(outputs, x.reshape(7, -1))), rel=1e-5)
  assert scores["test_mse"] == pytest.approx(float(jnp.mean((mean - x.reshape(7, -1)) ** 2)),
                                             rel=1e-5)


def test_reconstruction_rejects_data_and_optimizers_that_do_not_fit_at_start_up():
  config = reconstruction_config()
  config.data.options.scale = "standard"
  with pytest.raises(ValueError, match=r"'bernoulli' needs inputs in \[0, 1\].*scale='unit'"):
    train.check_config(config)
  config = reconstruction_config(gn={"name": "gauss_newton", "learning_rate": 0.1, "loss": "mse"})
  with pytest.raises(ValueError, match="Run 'gn': loss 'mse' is not the Gauss-Newton model of "
                                       "task 'reconstruction' .*bernoulli.*fit: none"):
    train.check_config(config)
  config = reconstruction_config("gaussian", gn={"name": "gauss_newton", "learning_rate": 0.1,
                                                 "loss": "mse"})
  train.check_config(config)
  config = reconstruction_config()
  config.task.likelihood = "poisson"
  with pytest.raises(ValueError, match="unknown likelihood 'poisson'; allowed: bernoulli"):
    train.check_config(config)
  config.task = {"name": "reconstruction", "sigm": 1.0}
  with pytest.raises(ValueError, match=r"config.task.sigm is not a field of task 'reconstruction'. "
                                       r"Did you mean config.task.sigma\? Allowed: likelihood"):
    train.check_config(config)


def test_edge_classification_needs_two_classes():
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.task = {"name": "edge_classification"}
  with pytest.raises(ValueError, match="classifies edges into 2 classes; .*num_classes=10"):
    train.check_config(config)


def test_optimizer_options_are_the_factorys_signature():
  skip = {"learning_rate"}
  assert train.OPTIONS["adam"] == {p.name: p.default for p in
                                   inspect.signature(optax.adam).parameters.values()
                                   if p.name not in skip}
  assert "aux_optimizer" not in train.OPTIONS["fishleg"]
  assert "model" not in train.OPTIONS["exact_gn"] and "apply_fn" not in train.OPTIONS["gauss_newton"]
  # An option of the signature that no config spelt out before reaches the transform.
  model = train.MLP(num_classes=2, hidden=())
  params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
  grads = jax.tree.map(jnp.ones_like, params)
  for nesterov, expected in ((False, -0.1), (True, -0.1 * (1 + 0.5) / 1)):
    setup = train.build_optimizer(ml_collections.ConfigDict(
        {"name": "sgd", "learning_rate": 0.1, "momentum": 0.5, "nesterov": nesterov}), model,
        train.classification())
    updates, _ = setup.tx.update(grads, setup.tx.init(params), params)
    jax.tree.map(lambda u, e=expected: np.testing.assert_allclose(u, e, rtol=1e-6), updates)


def test_validation_split_is_carved_from_train_by_its_seed_and_never_from_test():
  full = data.load_dataset("digits", "train")
  train_part, val = train.split_validation(full, 0.25, seed=3)
  assert len(val.y) == round(0.25 * len(full.y)) and len(train_part.y) + len(val.y) == len(full.y)
  rows = lambda d: {r.tobytes() for r in d.x.reshape(len(d.x), -1)}
  assert not rows(train_part) & rows(val) and rows(train_part) | rows(val) == rows(full)
  again, other = train.split_validation(full, 0.25, seed=3), train.split_validation(full, 0.25, 4)
  np.testing.assert_array_equal(again[1].x, val.x)
  assert not np.array_equal(other[1].x, val.x)
  assert train.split_validation(full, 0.0, seed=3) == (full, None)


def early_stopping_config():
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.num_devices = 1
  config.num_epochs, config.eval_every = 6, 1
  config.data.validation_fraction = 0.2
  # Too large a step for this model: the validation loss stops improving within a few steps.
  config.optimizers = ml_collections.ConfigDict({"sgd": {"name": "sgd", "learning_rate": 30.0}})
  config.early_stopping = ml_collections.ConfigDict({"metric": "val_loss", "patience": 2,
                                                     "mode": "min"})
  return config


def test_early_stopping_keeps_the_best_validation_step_and_resumes_stopped(tmp_path):
  config = early_stopping_config()
  result = train.train_and_evaluate(config, str(tmp_path))["sgd"]
  evaluated = [r for r in train.read_metrics(str(tmp_path)) if "val_loss" in r]
  best = min(evaluated, key=lambda r: r["val_loss"])
  assert result["best_step"] == best["step"]
  assert result["test_loss"] == pytest.approx(best["test_loss"], rel=1e-6)
  # Stopped `patience` evaluations after the best one, before the 24 steps were done.
  assert result["step"] == best["step"] + 2 == evaluated[-1]["step"] and result["step"] < 24
  records = train.read_metrics(str(tmp_path))
  again = train.train_and_evaluate(config, str(tmp_path))["sgd"]  # resumes a stopped run
  assert again["step"] == result["step"] and again["best_step"] == result["best_step"]
  assert train.read_metrics(str(tmp_path)) == records


def test_early_stopping_on_test_metrics_or_without_validation_fails_at_start_up():
  config = early_stopping_config()
  config.early_stopping.metric = "test_loss"
  with pytest.raises(ValueError, match=r"must be a validation metric \(val_...\), never a test"):
    train.check_config(config)
  config = early_stopping_config()
  config.data.validation_fraction = 0.0
  with pytest.raises(ValueError, match="needs a validation split: set data.validation_fraction"):
    train.check_config(config)


def meta_config(**runs):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_epochs = 1
  config.eval_every = 0
  config.log_every = 1
  config.checkpoint_every = 2
  config.max_to_keep = 1
  config.num_devices = 1
  config.task = ml_collections.ConfigDict({
      "name": "meta_learning", "model": "linear", "inner_lrs": (0.1, 0.1),
      "family": {"kind": "linear", "branching": (2, 2), "level_stds": (1.0, 0.5), "dim": 3,
                 "num_support": 3, "num_query": 4},
      "cluster": {"method": "average", "depth": 1, "thresholds": (0.0,)},
      "steps_per_epoch": 4, "num_test_batches": 3, "eval_chunk": 3})
  config.optimizers = ml_collections.ConfigDict(runs)
  return config


def test_meta_learning_steps_are_treemaml_meta_steps_on_sampled_task_batches(tmp_path):
  config = meta_config(
      maml={"name": "adam", "learning_rate": 0.05, "inner": {"rule": "maml"}},
      tree={"name": "adam", "learning_rate": 0.05, "inner": {"rule": "tree", "tree": "true"}},
      learned={"name": "sgd", "learning_rate": 0.05, "inner": {"rule": "tree",
                                                                "tree": "learned"}})
  results = train.train_and_evaluate(config, str(tmp_path))
  # The same meta-steps by hand: TreeMAML's own outer step on the same batches of tasks.
  family = meta.HierarchicalRegression("linear", branching=(2, 2), level_stds=(1.0, 0.5), dim=3,
                                       num_support=3, num_query=4)
  learner = meta.TreeMAML(meta.linear_loss, (0.1, 0.1))
  outer = optax.adam(0.05)
  meta_step = jax.jit(learner.make_meta_step(outer))
  theta = {"w": jnp.zeros(3), "b": jnp.zeros(())}
  opt_state = outer.init(theta)
  train_key = jax.random.fold_in(jax.random.key(0), 1)
  for step in range(4):
    support, query, _ = family.sample(jax.random.fold_in(train_key, step))
    labels = meta.singleton_labels(2, 4)
    theta, opt_state, _ = meta_step(theta, opt_state, support, query, labels)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(results["maml"]["params"]), theta)
  assert results["tree"]["test_ari_step_1"] == 1.0 and results["tree"]["test_ari_step_2"] == 1.0
  records = train.read_metrics(str(tmp_path))
  assert {r["run"] for r in records} == {"maml", "tree", "learned"}
  assert all(np.isfinite(r["test_loss_step_2"]) for r in records if "test_loss_step_2" in r)


def test_meta_learning_rejects_bad_inner_rules_and_supervised_optimizers():
  config = meta_config(bad={"name": "adam", "learning_rate": 0.1, "inner": {"rule": "reptile"}})
  with pytest.raises(ValueError, match="Run 'bad': Unknown inner rule 'reptile'; allowed: maml"):
    train.check_config(config)
  config = meta_config(fl={"name": "fishleg", "learning_rate": 0.1})
  with pytest.raises(ValueError, match="Run 'fl': optimizer 'fishleg' needs step arguments.*"
                                       "outer optimizers of meta_learning: sgd, adam"):
    train.check_config(config)
  config = meta_config(sgd={"name": "sgd", "learning_rate": 0.1, "inner": {"rule": "maml"}})
  config.task.cluster = {"method": "average", "depth": 1, "thresholds": (0.5, 0.1)}
  config.optimizers.sgd.inner = {"rule": "tree", "tree": "learned"}
  with pytest.raises(ValueError, match="Run 'sgd': thresholds must be 1 strictly increasing"):
    train.check_config(config)
