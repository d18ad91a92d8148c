"""Supervised tasks: the loss, targets, metrics and plots of a kind of labelled-data problem.

* ``classification``: softmax cross-entropy and accuracy (precision / recall / F1 of class 1 on
  two-class data); ``edge_classification``: the same for graph edges, always binary;
* ``reconstruction`` (autoencoders): the targets are the flattened inputs; the loss is the NLL
  of a Bernoulli (pixel logits) or Gaussian (means) likelihood, summed over pixels.

Each is a :class:`SupervisedTask` that implements the trainer's task protocol
(:mod:`gnrev.train.tasks`); its likelihood gives the Fisher products of FishLeg.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gnrev import curvature, data
from gnrev.train import checkpoint, configs, metrics, pruning, sharding, validation
from gnrev.train.models import build_model, cross_entropy
from gnrev.train.optimizers import OptimizerSetup, build_optimizer, check_optimizer
from gnrev.train.state import Checked, Program, TrainState, keep_if_finite


class Splits(NamedTuple):
  """A supervised task's data: the train, validation (None without one) and test splits."""
  train: data.Dataset
  val: data.Dataset | None
  test: data.Dataset


Panels = tuple[tuple[str, str, str], ...]

# Panels every supervised task draws (when its records hold the metric).
_COMMON_PANELS: Panels = (("train_loss", "train loss (pre-step batch)", "log"),
                          ("test_loss", "test loss", "log"),
                          ("val_loss", "validation loss", "log"))
_BINARY_PANELS: Panels = (("test_precision", "test precision (class 1)", "linear"),
                          ("test_recall", "test recall (class 1)", "linear"),
                          ("test_f1", "test F1 (class 1)", "linear"))
_CHANGE_PANEL: Panels = (("loss_change_pct", "% loss change on the same batch", "linear"),)


@dataclasses.dataclass(frozen=True)
class SupervisedTask:
  """A supervised problem on a :class:`gnrev.data.Dataset`; its functions run inside the jit.

  Attributes:
    likelihood: the :class:`gnrev.curvature.Likelihood` whose NLL is :attr:`loss`.
    num_outputs: ``dataset -> int``, the model's output width.
    targets: ``dataset -> (n, num_outputs) float32``.
    loss: ``(outputs, targets) -> scalar``, the batch mean (what is trained).
    step_metrics: ``(outputs, targets) -> {name: scalar}``, logged as ``train_<name>``; those
      of ``step_metric_names`` are also summed over each epoch.
    eval_sums: ``(outputs, targets, mask) -> {name: sum}`` over a padded chunk, with ``loss``.
    scores: ``(sums, dataset) -> {name: value}``, reported as ``test_<name>`` / ``val_<name>``.
    panels: ``(metric, title, yscale)`` of the plot.
    gn_losses: the :mod:`gnrev.gn` losses a Gauss-Newton run may fit the targets with.
    check_data: ``dataset -> None``, raising ``ValueError`` when the data do not fit the task.
  """
  name: str
  likelihood: curvature.Likelihood
  num_outputs: Callable[[data.Dataset], int]
  targets: Callable[[data.Dataset], np.ndarray]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  step_metrics: Callable[[jax.Array, jax.Array], dict]
  eval_sums: Callable[[jax.Array, jax.Array, jax.Array], dict]
  scores: Callable[[dict, data.Dataset], dict]
  panels: Panels
  gn_losses: tuple[str, ...]
  check_data: Callable[[data.Dataset], None]
  step_metric_names: tuple[str, ...] = ()
  run_fields: ClassVar[tuple[str, ...]] = pruning.RUN_FIELDS
  sections: ClassVar[tuple[str, ...]] = ("data", "model", "optimizers")

  def check_outputs(self, outputs_shape: tuple, targets_shape: tuple) -> None:
    """Raises unless the model's outputs have the targets' shape (one row per example)."""
    if tuple(outputs_shape[1:]) != tuple(targets_shape[1:]):
      raise ValueError(
          f"Task {self.name!r}: the model outputs rows of shape {tuple(outputs_shape[1:])} but "
          f"the targets have rows of shape {tuple(targets_shape[1:])}; the model's output width "
          f"must be {math.prod(targets_shape[1:])}.")

  # -- the Task protocol (gnrev.train.tasks) ---------------------------------------------------

  def load(self, config: ml_collections.ConfigDict) -> Splits:
    """The train split (its first ``data.train_subset`` examples if > 0) less the validation
    split (``data.validation_fraction``; None without one), and the test split."""
    return _load_splits(config)

  def check(self, config: ml_collections.ConfigDict, splits: Splits, mesh,
            options: dict[str, dict]) -> Checked:
    """Checks the batch sizes on the mesh, the splits, the model on their shapes, each run's
    optimizer (``options[run]``) and its pruning; returns what they built."""
    sharding.check_divisible(config.data.batch_size, mesh, "data.batch_size")
    sharding.check_divisible(config.data.eval_batch_size, mesh, "data.eval_batch_size")
    if validation.early_stopping(config) is not None and splits.val is None:
      raise ValueError("early_stopping needs a validation split: set "
                       "data.validation_fraction > 0.")
    train, _, test = splits
    model = validation.check_data(config, self, train, test)
    self.check_data(train)
    self.check_data(test)
    setups = {}
    for run, run_options in options.items():
      try:
        setups[run] = check_optimizer(run_options, model, self, train.x.shape,
                                      config.data.batch_size)
      except ValueError as e:
        raise ValueError(f"Run {run!r}: {e}") from e
    checkpoint.check_init_from(config)
    total_steps = config.num_epochs * data.steps_per_epoch(len(train.y), config.data.batch_size)
    pruning.check_pruning(config, model=model, example=train.x[:1], total_steps=total_steps)
    return Checked(splits, model, setups)

  def program(self, config: ml_collections.ConfigDict, run: str, checked: Checked,
              mesh) -> Program:
    train, val, test = checked.data
    return supervised_program(config, run, self, train, test, mesh, val, model=checked.model,
                              setup=checked.optimizers[run])


def _classification_sums(logits, targets, mask):
  losses = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
  predicted, actual = jnp.argmax(logits, -1), jnp.argmax(targets, -1)
  return {"loss": jnp.sum(losses * mask), "correct": jnp.sum((predicted == actual) * mask),
          **metrics.binary_counts(predicted, actual, mask)}


def _classification(name: str, binary: bool | None) -> SupervisedTask:
  """``binary``: True always reports precision / recall / F1; None when there are 2 classes."""

  def scores(sums, dataset):
    count = len(dataset.y)
    out = {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}
    if binary or (binary is None and dataset.num_classes == 2):
      out.update(metrics.binary_scores(sums))
    return out

  def check_data(dataset):
    if binary and dataset.num_classes != 2:
      raise ValueError(f"Task {name!r} classifies edges into 2 classes; the dataset has "
                       f"num_classes={dataset.num_classes}.")
    labels = np.asarray(dataset.y)
    if labels.size and (labels.min() < 0 or labels.max() >= dataset.num_classes):
      raise ValueError(f"Task {name!r}: labels must lie in [0, {dataset.num_classes}); got "
                       f"values in [{labels.min()}, {labels.max()}].")

  accuracy = lambda logits, y: {"accuracy": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(y, -1))}
  return SupervisedTask(
      name=name, likelihood=curvature.categorical(),
      num_outputs=lambda dataset: dataset.num_classes,
      targets=lambda dataset: data.one_hot(dataset.y, dataset.num_classes),
      loss=cross_entropy, step_metrics=accuracy, eval_sums=_classification_sums, scores=scores,
      panels=(*_COMMON_PANELS, ("test_accuracy", "test accuracy", "linear"),
              ("val_accuracy", "validation accuracy", "linear"), *_CHANGE_PANEL,
              *_BINARY_PANELS),
      gn_losses=("ce", "ce_identity", "mse"), check_data=check_data,
      step_metric_names=("accuracy",))


def classification() -> SupervisedTask:
  """Softmax classification (the launcher's default task)."""
  return _classification("classification", binary=None)


def edge_classification() -> SupervisedTask:
  """Two-class classification of graph edges, with precision / recall / F1 of class 1."""
  return _classification("edge_classification", binary=True)


RECONSTRUCTION_LIKELIHOODS = ("bernoulli", "gaussian")


def reconstruction(likelihood: str = "bernoulli", sigma: float = 1.0) -> SupervisedTask:
  """Autoencoding: targets are the flattened inputs; outputs are their logits or means.

  Args:
    likelihood: ``"bernoulli"`` (outputs are pixel logits; inputs must lie in [0, 1]) or
      ``"gaussian"`` (outputs are means; ``sigma`` the fixed standard deviation).
    sigma: the Gaussian's standard deviation (> 0); ignored for Bernoulli.
  """
  if likelihood not in RECONSTRUCTION_LIKELIHOODS:
    raise ValueError(f"Task 'reconstruction': unknown likelihood {likelihood!r}; allowed: "
                     f"{', '.join(RECONSTRUCTION_LIKELIHOODS)}.")
  lik = curvature.bernoulli() if likelihood == "bernoulli" else curvature.gaussian(sigma)
  mean = jax.nn.sigmoid if likelihood == "bernoulli" else (lambda outputs: outputs)

  def flat(dataset):
    return np.asarray(dataset.x, np.float32).reshape(len(dataset.x), -1)

  def check_data(dataset):
    x = np.asarray(dataset.x)
    if likelihood == "bernoulli" and x.size and (x.min() < 0 or x.max() > 1):
      raise ValueError(
          f"Task 'reconstruction' with likelihood 'bernoulli' needs inputs in [0, 1] (pixel "
          f"intensities); the dataset's lie in [{x.min():.3g}, {x.max():.3g}]. Use unscaled "
          f"pixels (e.g. data option scale='unit') or likelihood 'gaussian'.")

  def sums(outputs, targets, mask):
    per_example = jax.vmap(lambda o, t: lik.nll(o[None], t[None]))(outputs, targets)
    squared = jnp.mean((mean(outputs) - targets) ** 2, axis=-1)
    return {"loss": jnp.sum(per_example * mask), "squared_error": jnp.sum(squared * mask)}

  return SupervisedTask(
      name="reconstruction", likelihood=lik,
      num_outputs=lambda dataset: math.prod(np.shape(dataset.x)[1:]),
      targets=flat, loss=lik.nll,
      step_metrics=lambda outputs, y: {"mse": jnp.mean((mean(outputs) - y) ** 2)},
      eval_sums=sums,
      scores=lambda s, dataset: {"loss": s["loss"] / len(dataset.x),
                                 "mse": s["squared_error"] / len(dataset.x)},
      panels=(*_COMMON_PANELS, ("test_mse", "test squared error per pixel", "log"),
              *_CHANGE_PANEL),
      gn_losses=("mse",) if likelihood == "gaussian" else (), check_data=check_data,
      step_metric_names=("mse",))


def make_train_step(model: nn.Module, setup: OptimizerSetup, task: SupervisedTask):
  """A jitted ``(state, fixed, x, y) -> (state, step_metrics)``; a step whose update or
  post-step loss is not finite is skipped whole (``skipped = 1``, :func:`keep_if_finite`)."""

  def loss_and_metrics(params, fixed, x, y):
    outputs = model.apply({"params": params, **fixed}, x)
    return task.loss(outputs, y), task.step_metrics(outputs, y)

  @jax.jit
  def train_step(state: TrainState, fixed, x, y):
    params = state.params
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, step_metrics), grads = jax.value_and_grad(loss_and_metrics, has_aux=True)(
        params, fixed, x, y)
    extra = setup.extra_args(params, fixed, (x, y), rng)
    updates, opt_state = setup.tx.update(grads, state.opt_state, params, **extra)
    new_params = optax.apply_updates(params, updates)
    loss_after, _ = loss_and_metrics(new_params, fixed, x, y)
    update_norm = optax.tree.norm(updates)
    finite = jnp.isfinite(loss_after) & jnp.isfinite(update_norm)
    change = 100.0 * (loss_after - loss) / loss
    named = [step_metrics[k] for k in task.step_metric_names]
    new_state = keep_if_finite(state, finite, params=new_params, opt_state=opt_state)
    new_state = new_state.replace(
        epoch_sums=state.epoch_sums + jnp.stack([loss, *named, change]).astype(jnp.float32))
    out = {"train_loss": loss, **{f"train_{k}": v for k, v in step_metrics.items()},
           "loss_change_pct": change, "update_norm": update_norm, "skipped": 1 - finite}
    return new_state, out

  return train_step


def epoch_sum_names(task: SupervisedTask) -> tuple[str, ...]:
  """Names of a supervised task's epoch sums (the order of ``state.epoch_sums``)."""
  return ("train_loss", *(f"train_{k}" for k in task.step_metric_names), "loss_change_pct")


def make_eval_step(model: nn.Module, task: SupervisedTask):
  """A jitted ``(params, fixed, x, y, mask) -> {name: sum}``: the task's sums over a chunk."""

  @jax.jit
  def eval_step(params, fixed, x, y, mask):
    return task.eval_sums(model.apply({"params": params, **fixed}, x), y, mask)

  return eval_step


def evaluate(eval_step, params, fixed, test: data.Dataset, targets: np.ndarray,
             batch_size: int, mesh, task: SupervisedTask, prefix: str = "test") -> dict:
  """The task's scores over a whole split (``<prefix>_<score>``), in padded chunks of
  ``batch_size`` (one compilation)."""
  count = len(targets)
  sums = {}
  for start in range(0, count, batch_size):
    rows = np.arange(start, start + batch_size)
    mask = (rows < count).astype(np.float32)
    x, y = sharding.shard_rows(mesh, np.minimum(rows, count - 1), test.x, targets)
    (m,) = sharding.shard_batch(mesh, mask)
    for name, value in eval_step(params, fixed, x, y, m).items():
      sums[name] = sums.get(name, 0.0) + float(value)
  return {f"{prefix}_{k}": float(v) for k, v in task.scores(sums, test).items()}


def _variables(config, model, train: data.Dataset, mesh):
  """``(params, fixed)`` of ``model``; the dataset's collections (e.g. a message graph) travel
  in ``fixed``, replicated, as an argument of every step."""
  _, variables = model.apply(dict(train.variables or {}), train.x[:1],
                             rngs={"params": jax.random.key(config.seed)}, mutable=True)
  fixed = {k: v for k, v in variables.items() if k != "params"}
  return variables["params"], sharding.replicate(mesh, fixed)


def supervised_program(config: ml_collections.ConfigDict, run: str, task: SupervisedTask,
                       train: data.Dataset, test: data.Dataset, mesh,
                       val: data.Dataset | None = None, *, model: nn.Module | None = None,
                       setup: OptimizerSetup | None = None) -> Program:
  """The :class:`Program` of run ``run``; ``model`` and ``setup`` (its optimizer) are built
  from the config when not given."""
  model = build_model(config.model, task.num_outputs(train)) if model is None else model
  params, fixed = _variables(config, model, train, mesh)
  train_targets, test_targets = task.targets(train), task.targets(test)
  outputs = jax.eval_shape(lambda p, f, x: model.apply({"params": p, **f}, x), params, fixed,
                           train.x[:1])
  task.check_outputs(outputs.shape, train_targets.shape)
  batch_size, eval_batch_size = config.data.batch_size, config.data.eval_batch_size
  eval_step = make_eval_step(model, task)
  val_targets = task.targets(val) if val is not None else None

  def evaluate_all(params):
    out = evaluate(eval_step, params, fixed, test, test_targets, eval_batch_size, mesh, task)
    if val is not None:
      out.update(evaluate(eval_step, params, fixed, val, val_targets, eval_batch_size, mesh,
                          task, prefix="val"))
    return out

  def batch(step):
    rows = data.batch_indices(len(train_targets), batch_size, config.data.seed, step - 1)
    return sharding.shard_rows(mesh, rows, train.x, train_targets)

  if setup is None:
    setup = build_optimizer(config.optimizers[run], model, task, task.run_fields)
  hook = pruning.build_hook(config, run, model, fixed, task, train, evaluate_all)
  if hook is not None:  # None: the run does not prune
    setup = hook.wrap_optimizer(setup)
  state = sharding.replicate(mesh, TrainState.create(
      params, setup.tx.init(params), jax.random.key(config.seed + 1), len(epoch_sum_names(task))))
  state = checkpoint.apply_init_from(config, state, setup.tx)
  postfix = ("train_loss", *(f"train_{k}" for k in task.step_metric_names[:1]))
  return Program(state=state if hook is None else hook.init_state(state), fixed=fixed,
                 step=make_train_step(model, setup, task), batch=batch, evaluate=evaluate_all,
                 steps_per_epoch=data.steps_per_epoch(len(train_targets), batch_size),
                 epoch_sum_names=epoch_sum_names(task), postfix=postfix,
                 after_step=None if hook is None else hook.after_step)


def split_validation(train: data.Dataset, fraction: float,
                     seed: int) -> tuple[data.Dataset, data.Dataset | None]:
  """``(train less validation, validation)``: ``round(fraction * n)`` examples drawn by
  ``seed``, both in the split's order (fraction 0: no validation split, None)."""
  if not 0 <= fraction < 1:
    raise ValueError(f"data.validation_fraction must be in [0, 1), got {fraction}.")
  if not fraction:
    return train, None
  n = len(train.y)
  num_val = int(round(fraction * n))
  if not 0 < num_val < n:
    raise ValueError(f"data.validation_fraction={fraction} of {n} training examples leaves "
                     f"{num_val} for validation and {n - num_val} for training; both need one.")
  chosen = np.zeros(n, bool)
  chosen[np.random.default_rng(seed).permutation(n)[:num_val]] = True
  part = lambda rows: train._replace(x=train.x[rows], y=train.y[rows])
  return part(~chosen), part(chosen)


def _load_splits(config: ml_collections.ConfigDict) -> Splits:
  data_dir, options = config.data.data_dir or None, dict(config.data.get("options", {}))
  train, test = (data.load_dataset(config.data.name, split, data_dir, **options)
                 for split in ("train", "test"))
  option = lambda field: config.data.get(field, configs.TRAINER_DEFAULTS["data"][field])
  train, val = split_validation(train, float(option("validation_fraction") or 0.0),
                                int(option("validation_seed")))
  if config.data.train_subset:
    train = train._replace(x=train.x[:config.data.train_subset],
                           y=train.y[:config.data.train_subset])
  return Splits(train, val, test)


def load_data(config: ml_collections.ConfigDict) -> tuple[data.Dataset, data.Dataset]:
  """``(train, test)`` of :meth:`SupervisedTask.load`."""
  train, _, test = _load_splits(config)
  return train, test
