"""Pruning as an option of the trainer: prune a run's kernels on a schedule, then fine-tune.

With ``config.pruning`` (shared by the runs) or ``config.optimizers.<run>.pruning`` (overriding
it), the trainer prunes the Dense and Conv kernels (never biases) after the scheduled steps (0:
before training) to the scheduled sparsity with OBS compensation (:mod:`gnrev.prune`), keeps the
masks in the train state (checkpoints and resume carry them) and chains
:func:`gnrev.prune.keep_masked` to the run's optimizer. Most runs start from a trained run's
checkpoint (``config.init_from``, :func:`gnrev.train.checkpoint.apply_init_from`).

Every evaluation logs ``sparsity``; a pruning step also logs ``pruned_test_*`` (right after
pruning, before fine-tuning), ``prune_target`` and FishLeg Surgeon's ``surgeon_aux_loss``, and
with ``sweep`` the one-shot scores ``sweep<pct>_test_*`` of copies pruned to other sparsities.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gnrev import optim, prune
from gnrev.train import rules

METHODS = ("fishleg_surgeon", "diagonal_fisher", "magnitude", "exact_obs")
SCHEDULES = ("one_shot", "cubic")
EXACT_OBS_MAX_PARAMS = 20_000  # a dense P x P inverse Fisher: beyond this, minutes and GBs
RUN_FIELDS = ("pruning",)  # run fields owned by this module, not by the optimizer
_SPARSITY = rules.number(0, 1, high_open=True)
# Each field of a pruning section: its default and its rule.
FIELDS: dict[str, tuple[Any, rules.Rule]] = {
    "method": ("fishleg_surgeon", rules.choice(METHODS)),  # exact_obs: a dense inverse Fisher
    "sparsity": (0.9, _SPARSITY),  # the final fraction of pruned kernel weights
    "ranking": ("global", rules.choice(prune.RANKINGS)),  # one ranking, or one per kernel
    # one_shot: prune once at `start`; cubic: `num_steps` steps at start, start + every, ... to
    # the cubic schedule's targets from `initial_sparsity` (every = 0: all at `start`).
    "schedule": ("one_shot", rules.choice(SCHEDULES)),
    "num_steps": (1, rules.integer(1)),
    "every": (0, rules.integer(0)),
    "start": (0, rules.integer(0)),
    "initial_sparsity": (0.0, _SPARSITY),
    "damping": (1e-3, rules.POSITIVE),  # of the Fisher, for every method but magnitude
    # FishLeg Surgeon: Q's family, aux steps of its first fit (from the diagonal warm start)
    # and before every later pruning step, and the aux optimizer's step size and batch.
    "q_family": ("kronecker", rules.choice(optim.Q_FAMILIES)),
    "fit_steps": (1000, rules.integer(1)),
    "refine_steps": (50, rules.integer(1)),
    "aux_learning_rate": (1e-3, rules.POSITIVE),
    "aux_batch_size": (128, rules.integer(1)),
    "precondition_aux": (True, rules.BOOL),
    "fisher_examples": (0, rules.integer(0)),  # training examples of the Fisher (0: all)
    "exact_obs_examples": (256, rules.integer(1)),  # the batch of exact OBS's dense Fisher
    "sweep": ((), rules.Rule("sequence", element=_SPARSITY)),  # see the module docstring
}
DEFAULTS: dict[str, Any] = {name: default for name, (default, _) in FIELDS.items()}
# Stream of the run's key that draws FishLeg Surgeon's probes and batches (see pruning_key).
_PRUNING_STREAM = 0x5EED


@flax.struct.dataclass
class PruneState:
  """The pruning part of a :class:`gnrev.train.TrainState`: params-shaped bool ``masks``
  (True: kept), FishLeg Surgeon's ``surgeon`` state (None for other methods) and the ``count``
  of pruning steps done."""
  masks: Any
  surgeon: Any
  count: jax.Array


def pruning_options(config: ml_collections.ConfigDict, run: str) -> dict | None:
  """Run ``run``'s pruning fields, defaults filled in; None when it does not prune.

  Raises:
    ValueError: for an unknown field, or a value its rule refuses.
  """
  shared = config.get("pruning") or {}
  own = config.optimizers[run].get("pruning") or {}
  if not shared and not own:
    return None
  options = {**DEFAULTS, **dict(shared), **dict(own)}
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"Run {run!r}: unknown pruning field(s) {', '.join(unknown)}."
                     f"{rules.did_you_mean(unknown[0], DEFAULTS, 'pruning.')} Allowed: "
                     f"{', '.join(DEFAULTS)}.")
  for name, (_, rule) in FIELDS.items():
    if not rule.allows(options[name]):
      raise ValueError(f"Run {run!r}: "
                       + rules.not_allowed(f"pruning.{name}", options[name], rule.describe()))
  if options["initial_sparsity"] > options["sparsity"]:
    raise ValueError(f"Run {run!r}: pruning.initial_sparsity {options['initial_sparsity']} "
                     f"exceeds sparsity {options['sparsity']}.")
  if options["schedule"] == "one_shot" and options["num_steps"] != 1:
    raise ValueError(f"Run {run!r}: pruning.num_steps={options['num_steps']} needs schedule "
                     f"'cubic' (a one-shot schedule prunes once).")
  return options


def schedule(options: dict) -> list[tuple[int, float]]:
  """``[(step, target sparsity), ...]``, ascending: after step ``step``, prune to ``target``."""
  if options["schedule"] == "one_shot":
    return [(int(options["start"]), float(options["sparsity"]))]
  targets = prune.cubic_sparsity_schedule(float(options["sparsity"]), int(options["num_steps"]),
                                          float(options["initial_sparsity"]))
  return [(int(options["start"]) + k * int(options["every"]), t) for k, t in enumerate(targets)]


def check_pruning(config: ml_collections.ConfigDict, model, example: Any,
                  total_steps: int) -> None:
  """Checks every run's pruning fields, that its schedule ends by ``total_steps`` and that exact
  OBS is asked only of small models (``model`` on the input ``example``).

  Raises:
    ValueError: naming the run, the field, the value and what is allowed.
  """
  for run in config.optimizers:
    options = pruning_options(config, run)
    if options is None:
      continue
    stopping = config.get("early_stopping")
    if stopping and stopping.get("patience", 0):
      raise ValueError(f"Run {run!r}: early_stopping would keep the parameters of an evaluation "
                       f"before a pruning step (denser than the masks); turn it off "
                       f"(early_stopping.patience=0) for pruning runs.")
    last = schedule(options)[-1][0]
    if last > total_steps:
      raise ValueError(
          f"Run {run!r}: the pruning schedule's last step ({last} = start + every * "
          f"(num_steps - 1)) is after the run's last step ({total_steps} = num_epochs x steps "
          f"per epoch); lower pruning.every / num_steps / start or train longer.")
    if options["method"] != "exact_obs":
      continue
    shapes = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(shapes))
    if num_params > EXACT_OBS_MAX_PARAMS:
      raise ValueError(f"Run {run!r}: pruning.method 'exact_obs' inverts a dense P x P Fisher; "
                       f"the model has P={num_params} > {EXACT_OBS_MAX_PARAMS} parameters. Use "
                       f"fishleg_surgeon or diagonal_fisher.")


def pruning_key(rng_data: jax.Array) -> jax.Array:
  """The key of FishLeg Surgeon's probes and batches, from a train state's ``rng`` key data
  (each refinement folds in its aux-step count, so refinements continue one stream)."""
  return jax.random.fold_in(jax.random.wrap_key_data(rng_data), _PRUNING_STREAM)


class PruningHook:
  """A run's pruning, built once per run: the optimizer it chains, the state it adds and the
  ``after_step`` of its :class:`gnrev.train.Program`, which prunes on the schedule.

  Args:
    options: the run's :func:`pruning_options`.
    model: the run's flax model (without non-trained variables).
    task: the run's supervised task (its likelihood and targets).
    train: the training split (its first ``fisher_examples`` examples give the curvature).
    evaluate: ``params -> {metric: value}``, the run's evaluation.
  """

  def __init__(self, options: dict, model, task, train, evaluate: Callable):
    self.options, self.evaluate, self.plan = options, evaluate, schedule(options)
    self.apply_fn = lambda params, x: model.apply({"params": params}, x)
    self.likelihood = task.likelihood
    count = int(options["fisher_examples"]) or len(train.y)
    self.x = jnp.asarray(train.x[:count])
    targets = task.targets(train)[:count]
    # Fisher statistics need the likelihood's own targets: class labels for the categorical.
    self.labels = jnp.asarray(np.argmax(targets, -1) if self.likelihood.name == "categorical"
                              else targets)
    self.squared_gradient_sum = jax.jit(prune.squared_gradient_sum(self.apply_fn,
                                                                   self.likelihood))
    self.refine = jax.jit(prune.q_refiner(
        self.apply_fn, self.likelihood, int(options["aux_batch_size"]),
        float(options["damping"]), float(options["aux_learning_rate"]),
        bool(options["precondition_aux"])))

  def wrap_optimizer(self, setup):
    """``setup`` chained with :func:`prune.keep_masked` (masks set by :meth:`init_state`)."""
    return setup._replace(tx=optax.chain(setup.tx, prune.keep_masked(None)))

  def init_state(self, state):
    """``state`` with dense masks and an initial FishLeg Surgeon state (the structure of every
    checkpoint of the run)."""
    masks = prune.dense_masks(state.params)
    surgeon = None
    if self.options["method"] == "fishleg_surgeon":
      surgeon = prune.init_surgeon(state.params, self.options["damping"], None,
                                   self.options["q_family"])
    return state.replace(pruning=PruneState(masks=masks, surgeon=surgeon, count=jnp.int32(0)),
                         opt_state=prune.replace_masks(state.opt_state, masks))

  def _inverse(self, state):
    options, params, pruned = self.options, state.params, state.pruning
    method, damping = options["method"], options["damping"]
    if method == "magnitude":
      return prune.magnitude_inverse(params), pruned.surgeon, {}
    squared_gradients = lambda: prune.mean_squared_gradients(
        self.apply_fn, params, self.x, self.labels, self.likelihood,
        sum_fn=self.squared_gradient_sum)
    if method == "diagonal_fisher":
      return prune.diagonal_fisher_inverse(squared_gradients(), damping), pruned.surgeon, {}
    if method == "exact_obs":
      inverse = prune.exact_inverse_fisher(self.apply_fn, params, pruned.masks,
                                           self.x[:options["exact_obs_examples"]],
                                           self.likelihood, damping)
      return inverse, pruned.surgeon, {}
    if int(pruned.count) == 0:  # FLS's diagonal warm start at the model being pruned, then the fit
      surgeon = prune.init_surgeon(params, damping, squared_gradients(), options["q_family"])
      num_steps = int(options["fit_steps"])
    else:
      surgeon, num_steps = pruned.surgeon, int(options["refine_steps"])
    surgeon = self.refine(surgeon, params, pruned.masks, self.x, pruning_key(state.rng),
                          num_steps)
    return (prune.fishleg_inverse(surgeon, params, pruned.masks), surgeon,
            {"surgeon_aux_loss": float(surgeon.aux_loss)})

  def prune_state(self, state, target: float, sweep=()):
    """``(state pruned to target, metrics of the step, {sparsity: params})``: the last are
    copies pruned by the same curvature to each sparsity of ``sweep``."""
    params, masks, ranking = state.params, state.pruning.masks, self.options["ranking"]
    inverse, surgeon, extra = self._inverse(state)
    swept = {s: prune.obs_prune(params, masks, s, inverse, ranking)[1] for s in sweep}
    masks, params = prune.obs_prune(params, masks, target, inverse, ranking)
    state = state.replace(params=params, opt_state=prune.replace_masks(state.opt_state, masks),
                          pruning=PruneState(masks=masks, surgeon=surgeon,
                                             count=state.pruning.count + 1))
    return state, extra, swept

  def after_step(self, state, step: int, record: dict):
    """Runs the pruning steps due after ``step``; adds ``sparsity`` to records that evaluate."""
    due = [target for at, target in self.plan if at == step]
    if due:
      start, extra = time.time(), {}
      for target in due:
        sweep = tuple(self.options["sweep"]) if int(state.pruning.count) == 0 else ()
        state, extra, swept = self.prune_state(state, target, sweep)
        for sparsity, params in swept.items():
          record.update({f"sweep{round(100 * sparsity)}_{k}": v
                         for k, v in self.evaluate(params).items()})
      record = {**record, "prune_target": due[-1], **extra,
                "prune_seconds": time.time() - start,
                **{f"pruned_{k}": v for k, v in self.evaluate(state.params).items()}}
    if due or any(k.startswith(("test_", "val_")) for k in record):
      record = {**record, "sparsity": float(prune.sparsity(state.pruning.masks))}
    return state, record


def build_hook(config: ml_collections.ConfigDict, run: str, model, fixed: dict, task, train,
               evaluate: Callable) -> PruningHook | None:
  """Run ``run``'s :class:`PruningHook`, None if it does not prune."""
  options = pruning_options(config, run)
  if options is None:
    return None
  if fixed:
    raise ValueError("pruning supports models without non-trained variables (MLP, CNN, ...).")
  return PruningHook(options, model, task, train, evaluate)
