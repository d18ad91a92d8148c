"""The meta-learning task: MAML / TreeMAML meta-steps over batches of tasks from a task family.

A training step is one meta-step on a fresh batch of tasks: every task adapts to its support set
with the run's inner rule, and the run's (outer) optimizer descends the mean query loss after
adaptation. Evaluation is the query loss after each inner step on fixed held-out batches.
``config.task`` holds the options of :class:`MetaLearningTask`; each run's ``inner`` its inner
rule: ``rule`` ``"maml"``, ``"tree"`` (gradients pooled over ``tree`` ``"true"``, the family's
tree; ``"learned"``, clusters of the task gradients; or ``"root"``, one shared first step) or
``"none"`` (no adaptation), and ``first_order`` (default: the task's).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnrev import curvature, meta
from gnrev.train import optimizers, validation
from gnrev.train.state import Checked, Program, TrainState, keep_if_finite

MODELS = ("linear", "mlp", "family")
# Task families by ``family.name`` (default "hierarchical_regression"). With ``model="family"``
# the family brings its own model: its ``loss_fn(params, batch)`` and ``init_params(key)``.
FAMILIES = {"hierarchical_regression": meta.HierarchicalRegression,
            "languages": meta.LanguageTasks}
RULES = ("maml", "tree", "none")
TREES = ("true", "learned", "root")
INNER_FIELDS = ("rule", "tree", "first_order")


class MetaData(NamedTuple):
  """The task family and the keys of the held-out batches of tasks."""
  family: meta.HierarchicalRegression
  test_keys: jax.Array
  val_keys: jax.Array | None


class MetaLearningTask:
  """Meta-learning on a task family of :mod:`gnrev.meta`.

  Args:
    family: the options of a family of :data:`FAMILIES` (``name``: default
      ``hierarchical_regression``).
    model: ``"linear"`` (``x w + b``), ``"mlp"`` (ReLU layers ``hidden`` on scalar inputs) or
      ``"family"`` (the family's own ``loss_fn`` and ``init_params``).
    inner_lrs: the inner step sizes, one per inner step.
    first_order: first-order MAML / TreeMAML, unless a run's ``inner.first_order`` says not.
    cluster: options of :func:`gnrev.meta.cluster_tasks` (learned trees) and of
      :class:`gnrev.meta.TreeMAML` (``recluster``, ``enforce_nesting``).
    num_test_batches, num_val_batches: held-out batches of tasks (keys from ``test_seed``,
      ``val_seed``; no validation with 0).
    eval_chunk: batches evaluated at once (memory).
  """

  name = "meta_learning"
  run_fields = ("inner",)
  sections = ("optimizers",)
  likelihood = curvature.gaussian(1.0)  # squared error: the Gaussian NLL up to constants
  step_metric_names = ()
  panels = (("train_loss", "meta-train query loss", "log"),
            ("test_loss", "test query loss after adaptation", "log"),
            ("val_loss", "validation query loss after adaptation", "log"))

  def __init__(self, family: Any = None, model: str = "linear", hidden: Sequence[int] = (40, 40),
               inner_lrs: Sequence[float] = (0.1, 0.1, 0.1), first_order: bool = False,
               cluster: Any = None, steps_per_epoch: int = 100, num_test_batches: int = 600,
               test_seed: int = 10_000, num_val_batches: int = 0, val_seed: int = 20_000,
               eval_chunk: int = 100):
    if model not in MODELS:
      raise ValueError(f"Task 'meta_learning': unknown model {model!r}; allowed: "
                       f"{', '.join(MODELS)}.")
    for name, value in (("steps_per_epoch", steps_per_epoch),
                        ("num_test_batches", num_test_batches), ("eval_chunk", eval_chunk)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"Task 'meta_learning': {name} must be a positive int, got {value!r}.")
    self.family_options = dict(family or {})
    if self.family_options.get("name", "hierarchical_regression") not in FAMILIES:
      raise ValueError(f"Task 'meta_learning': unknown family {self.family_options['name']!r}; "
                       f"allowed: {', '.join(FAMILIES)}.")
    self.model, self.hidden = model, tuple(hidden)
    self.inner_lrs, self.first_order = tuple(float(a) for a in inner_lrs), bool(first_order)
    self.cluster = dict(cluster or {})
    self.steps_per_epoch = steps_per_epoch
    self.num_test_batches, self.test_seed = num_test_batches, test_seed
    self.num_val_batches, self.val_seed = num_val_batches, val_seed
    self.eval_chunk = eval_chunk
    self.loss_fn = meta.linear_loss if model == "linear" else meta.mlp_loss

  def load(self, config) -> MetaData:
    del config
    options = dict(self.family_options)
    name = options.pop("name", "hierarchical_regression")
    family = FAMILIES[name](**options)
    if (self.model == "family") != hasattr(family, "init_params"):
      allowed = "'family'" if hasattr(family, "init_params") else "'linear' or 'mlp'"
      raise ValueError(f"Task 'meta_learning': family {name!r} needs model {allowed}, got "
                       f"{self.model!r}.")
    val = (jax.random.split(jax.random.key(self.val_seed), self.num_val_batches)
           if self.num_val_batches else None)
    return MetaData(family, jax.random.split(jax.random.key(self.test_seed),
                                             self.num_test_batches), val)

  def inner(self, opt_config) -> dict:
    """The run's inner rule, defaults filled in; a ValueError names a bad field or value."""
    fields = dict(opt_config.get("inner") or {})
    unknown = sorted(set(fields) - set(INNER_FIELDS))
    if unknown:
      raise ValueError(f"Unknown inner field(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(INNER_FIELDS)}.")
    inner = {"rule": "maml", "tree": "true", "first_order": self.first_order, **fields}
    if inner["first_order"] is None:
      inner["first_order"] = self.first_order
    if inner["rule"] not in RULES:
      raise ValueError(f"Unknown inner rule {inner['rule']!r}; allowed: {', '.join(RULES)}.")
    if inner["tree"] not in TREES:
      raise ValueError(f"Unknown inner tree {inner['tree']!r}; allowed: {', '.join(TREES)}.")
    return inner

  def check(self, config, splits: MetaData, mesh, options: dict[str, dict]) -> Checked:
    """Checks early stopping and each run: its inner rule, its outer optimizer (built here) and
    the learned tree."""
    del mesh
    if validation.early_stopping(config) is not None and not self.num_val_batches:
      raise ValueError("early_stopping needs validation batches of tasks: set "
                       "task.num_val_batches > 0.")
    return Checked(splits, None, {run: self._check_run(config, run, splits, options[run])
                                  for run in config.optimizers})

  def _check_run(self, config, run: str, splits: MetaData,
                 options: dict) -> optimizers.OptimizerSetup:
    try:
      if config.get("pruning") or config.optimizers[run].get("pruning"):
        raise ValueError(f"pruning needs a supervised task (classification, reconstruction...), "
                         f"not {self.name!r}.")
      inner = self.inner(config.optimizers[run])
      if optimizers.OPTIMIZERS[options["name"]].needs_model:
        outer = [n for n, e in optimizers.OPTIMIZERS.items() if not e.needs_model]
        raise ValueError(f"optimizer {options['name']!r} needs step arguments of a supervised "
                         f"model; outer optimizers of meta_learning: {', '.join(outer)}.")
      setup = optimizers.check_optimizer(options, None, self)
      if inner["rule"] == "tree" and inner["tree"] == "learned":
        self._cluster_fn(splits.family)  # cluster_tasks' own checks run when it is called
        grads = jax.tree.map(lambda p: jnp.zeros((splits.family.num_tasks,) + jnp.shape(p)),
                             self._init(jax.random.key(0), splits.family))
        jax.eval_shape(self._cluster_fn(splits.family), grads)
    except ValueError as e:
      raise ValueError(f"Run {run!r}: {e}") from e
    return setup

  def _init(self, key, family):
    if self.model == "family":
      return family.init_params(key)
    return meta.init_regression_params(self.model, family.dim, self.hidden, key)

  def _cluster_fn(self, family):
    c = {"method": "average", **self.cluster}
    c.setdefault("depth", max(len(getattr(family, "branching", ())) - 1, 1))
    c.pop("recluster", None)
    c.pop("enforce_nesting", None)
    if "thresholds" in c and c["thresholds"] is not None:
      c["thresholds"] = tuple(c["thresholds"])
    return functools.partial(meta.cluster_tasks, num_steps=len(self.inner_lrs), **c)

  def learner(self, inner: dict, family) -> meta.TreeMAML:
    """The :class:`gnrev.meta.TreeMAML` of a run's inner rule."""
    lrs = (0.0,) * len(self.inner_lrs) if inner["rule"] == "none" else self.inner_lrs
    loss_fn = family.loss_fn if self.model == "family" else self.loss_fn
    return meta.TreeMAML(loss_fn, lrs, first_order=inner["first_order"],
                         cluster_fn=self._cluster_fn(family),
                         recluster=self.cluster.get("recluster", "every_step"),
                         enforce_nesting=self.cluster.get("enforce_nesting", False))

  def schedule(self, inner: dict, true_labels: jax.Array):
    """The ``(K, n)`` labels of the run's inner rule (None: learned by clustering)."""
    num_tasks = true_labels.shape[-1]
    singletons = meta.singleton_labels(len(self.inner_lrs), num_tasks)
    if inner["rule"] != "tree":
      return singletons
    if inner["tree"] == "root":
      return singletons.at[0].set(0)
    if inner["tree"] == "learned":
      return None
    return true_labels

  def program(self, config, run: str, checked: Checked, mesh) -> Program:
    del mesh  # a batch of tasks is one device's work here
    splits, setup = checked.data, checked.optimizers[run]
    family = splits.family
    inner = self.inner(config.optimizers[run])
    learner = self.learner(inner, family)
    params = self._init(jax.random.key(config.seed), family)
    train_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    state = TrainState.create(params, setup.tx.init(params), jax.random.key(config.seed + 1), 1)

    @jax.jit
    def step(state: TrainState, fixed, key):
      del fixed
      support, query, true_labels = family.sample(key)
      labels = self.schedule(inner, true_labels)
      loss, grads = jax.value_and_grad(learner.meta_loss)(state.params, support, query, labels)
      updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
      update_norm = optax.tree.norm(updates)
      finite = jnp.isfinite(loss) & jnp.isfinite(update_norm)
      new_state = keep_if_finite(state, finite, params=optax.apply_updates(state.params, updates),
                                 opt_state=opt_state)
      new_state = new_state.replace(epoch_sums=state.epoch_sums + loss[None])
      return new_state, {"train_loss": loss, "update_norm": update_norm, "skipped": 1 - finite}

    @jax.jit
    def query_losses(params, keys):
      def one(key):
        support, query, true_labels = family.sample(key)
        path, used = learner.adaptation_path(params, support, self.schedule(inner, true_labels))
        losses = jax.vmap(lambda p: jnp.mean(jax.vmap(learner.loss_fn)(p, query)))(path)
        return losses, used, true_labels
      return jax.lax.map(one, keys, batch_size=self.eval_chunk)

    def evaluate_split(params, keys, prefix):
      losses, used, true = map(np.asarray, query_losses(params, keys))
      aris = meta.adjusted_rand_indices(true, used).mean(0)
      out = {f"{prefix}_loss": float(losses[:, -1].mean())}
      for k in range(losses.shape[1]):
        out[f"{prefix}_loss_step_{k}"] = float(losses[:, k].mean())
        out[f"{prefix}_loss_std_step_{k}"] = float(losses[:, k].std())
      out.update({f"{prefix}_ari_step_{k + 1}": float(a) for k, a in enumerate(aris)})
      return out

    def evaluate(params):
      out = evaluate_split(params, splits.test_keys, "test")
      if splits.val_keys is not None:
        out.update(evaluate_split(params, splits.val_keys, "val"))
      return out

    return Program(state=state, fixed={}, step=step,
                   batch=lambda s: (jax.random.fold_in(train_key, s - 1),), evaluate=evaluate,
                   steps_per_epoch=self.steps_per_epoch, epoch_sum_names=("train_loss",))
