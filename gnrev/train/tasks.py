"""Tasks by name: what a kind of problem means for the trainer.

A task is the loss, the targets, the metrics, the evaluation sums and the plot panels of a kind
of problem, plus the likelihood its loss is the negative log of (:mod:`gnrev.curvature`), which
optimizers that need Fisher products (FishLeg) use. ``config.task`` names it (``name`` plus the
task's options; a config without ``task`` is ``classification``):

* ``classification``: one-hot targets, softmax cross-entropy, accuracy; two-class datasets also
  get precision / recall / F1 of class 1. Likelihood: categorical.
* ``edge_classification``: classification of the edges of a graph (the ``graph_returns``
  events) as two classes, always with the binary metrics; the dataset must have 2 classes.
* ``reconstruction`` (autoencoders): the targets are the inputs, flattened; the model outputs a
  tensor of that shape, logits (``likelihood="bernoulli"``, pixels in [0, 1]) or means
  (``"gaussian"`` with ``sigma``). The loss is the NLL summed over pixels and averaged over
  examples; the test metrics are that loss and the per-pixel squared error of the mean.
* ``meta_learning``: meta-steps of MAML / TreeMAML over batches of tasks from a task family of
  :mod:`gnrev.meta` (:mod:`gnrev.train.meta_task`).

A supervised task is a :class:`SupervisedTask` of pure functions; the trainer
(:mod:`gnrev.train.loop`) calls them inside its jitted steps. Each task's options are the keyword
arguments of its builder in :data:`TASKS` (defaults read from the signature).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gnrev import curvature, data
from gnrev.train import meta_task, metrics
from gnrev.train.models import cross_entropy

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
  """A supervised problem on a :class:`gnrev.data.Dataset` (see the module docstring).

  Attributes:
    name: the task's name in :data:`TASKS`.
    likelihood: the :class:`gnrev.curvature.Likelihood` whose NLL is the loss (for Fisher
      products; its ``output_fisher_product`` is the curvature of :attr:`loss`).
    num_outputs: ``dataset -> int``, the model's output width (classes, or pixels).
    targets: ``dataset -> (n, num_outputs) float32`` targets of every example.
    loss: ``(outputs, targets) -> scalar``, the mean over the batch (what is trained).
    step_metrics: ``(outputs, targets) -> {name: scalar}`` logged as ``train_<name>`` and
      summed over each epoch (``epoch_train_<name>``), besides the loss.
    eval_sums: ``(outputs, targets, mask) -> {name: sum}`` over a padded chunk; must hold
      ``loss`` (summed per-example losses).
    scores: ``(sums, dataset) -> {name: value}`` (means over the split's examples), reported as
      ``test_<name>`` / ``val_<name>``.
    panels: ``(metric, title, yscale)`` of the plot, one per metric.
    gn_losses: the :mod:`gnrev.gn` losses whose Gauss-Newton model is this task's loss.
    check_data: ``dataset -> None``; raises ``ValueError`` when the data do not fit the task.
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

  def check_outputs(self, outputs_shape: tuple, targets_shape: tuple) -> None:
    """Raises unless the model's outputs have the targets' shape (one row per example)."""
    if tuple(outputs_shape[1:]) != tuple(targets_shape[1:]):
      raise ValueError(
          f"Task {self.name!r}: the model outputs rows of shape {tuple(outputs_shape[1:])} but "
          f"the targets have rows of shape {tuple(targets_shape[1:])}; the model's output width "
          f"must be {math.prod(targets_shape[1:])}.")


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


TASKS: dict[str, Callable[..., Any]] = {
    "classification": classification,
    "edge_classification": edge_classification,
    "reconstruction": reconstruction,
    "meta_learning": meta_task.MetaLearningTask,
}


def task_options(name: str) -> dict[str, Any]:
  """The options of task ``name`` and their defaults, read from its builder's signature."""
  return {p.name: p.default for p in inspect.signature(TASKS[name]).parameters.values()
          if p.default is not inspect.Parameter.empty}


def build_task(config: Any):
  """The task of ``config.task`` (``name`` and options), or classification without one.

  Raises:
    ValueError: for an unknown task or an option the task does not have (naming the allowed).
  """
  fields = dict(config.get("task") or {}) if hasattr(config, "get") else {}
  name = fields.pop("name", "classification")
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}.")
  allowed = task_options(name)
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    raise ValueError(f"Unknown field(s) {', '.join(unknown)} for task {name!r}; allowed: "
                     f"{', '.join(['name', *allowed])}.")
  return TASKS[name](**fields)
