"""Pruning as an option of the trainer: start from a trained run, prune on a schedule, fine-tune.

Two config sections make a pruning experiment a run of :func:`gnrev.train.train_and_evaluate`:

* ``config.init_from`` (``workdir``, ``run``, optional ``step``; default the latest): the run
  starts from the parameters of that run's checkpoint (e.g. a dense model trained by the same
  launcher) with a fresh optimizer state (:func:`gnrev.train.checkpoint.apply_init_from`). It
  works without pruning too (continue training).
* ``config.pruning`` (and per run ``config.optimizers.<run>.pruning``, whose fields override the
  shared ones): at the scheduled steps the trainer prunes the kernels of the Dense/Conv layers
  (:mod:`gnrev.prune`; biases never) to the scheduled sparsity with OBS compensation, keeps the
  masks in the train state (:class:`PruneState`, so checkpoints and resume carry them) and chains
  :func:`gnrev.prune.keep_masked` to the run's optimizer, so fine-tuning never revives a pruned
  weight.

Fields of the pruning section (defaults in :data:`DEFAULTS`):

* ``method``: ``fishleg_surgeon`` (Q fitted by FishLeg's aux loss with theta frozen, refined
  between pruning steps), ``diagonal_fisher`` (diagonal empirical-Fisher OBS), ``magnitude`` or
  ``exact_obs`` (dense inverse Fisher; models of at most :data:`EXACT_OBS_MAX_PARAMS` weights);
* ``sparsity``: the final fraction of pruned kernel weights, in ``[0, 1)``; ``ranking``:
  ``global`` (one ranking over all kernels) or ``layer`` (every kernel pruned to it);
* ``schedule``: ``one_shot`` (one pruning step at ``start``) or ``cubic`` (``num_steps`` pruning
  steps at ``start, start + every, ...`` to the targets of
  :func:`gnrev.prune.cubic_sparsity_schedule` from ``initial_sparsity``; ``every = 0`` puts them
  all at ``start``: multi-step pruning without fine-tuning between the steps);
* FishLeg Surgeon: ``damping`` (also the diagonal-Fisher and exact-OBS damping), ``q_family``,
  ``fit_steps`` (aux steps at the first pruning step, from the diagonal warm start),
  ``refine_steps`` (aux steps before every later pruning step), ``aux_learning_rate``,
  ``aux_batch_size``, ``precondition_aux``;
* ``fisher_examples``: training examples of the Fisher statistics (0: the whole train split);
  ``exact_obs_examples``: the batch of exact OBS's dense Fisher;
* ``sweep``: sparsities at which the first pruning step's curvature also prunes a copy of the
  model, evaluated and discarded (``sweep<pct>_test_*``): a whole one-shot accuracy-sparsity
  curve without fine-tuning from one run.

Logged to ``metrics.jsonl``: ``sparsity`` with every evaluation; at each pruning step also
``pruned_test_*`` (and ``pruned_val_*``), the scores right after pruning before any fine-tuning,
``prune_target`` and, for FishLeg Surgeon, ``surgeon_aux_loss``. The ``test_*`` of that step are
those before the step's pruning.

For example, ``config.init_from = {"workdir": "runs/dense", "run": "adam"}`` with
``config.pruning = {"method": "fishleg_surgeon", "sparsity": 0.9, "schedule": "cubic",
"num_steps": 4, "every": 50}`` makes ``train_and_evaluate(config, "runs/fls90")`` start from the
dense run's checkpoint, prune in 4 cubic steps to 90% and fine-tune 50 steps after each.
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

METHODS = ("fishleg_surgeon", "diagonal_fisher", "magnitude", "exact_obs")
SCHEDULES = ("one_shot", "cubic")
EXACT_OBS_MAX_PARAMS = 20_000  # a dense P x P inverse Fisher: beyond this, minutes and GBs
RUN_FIELDS = ("pruning",)  # run fields owned by this module, not by the optimizer
DEFAULTS: dict[str, Any] = {
    "method": "fishleg_surgeon", "sparsity": 0.9, "ranking": "global", "schedule": "one_shot",
    "num_steps": 1, "every": 0, "start": 0, "initial_sparsity": 0.0,
    "damping": 1e-3, "q_family": "kronecker", "fit_steps": 1000, "refine_steps": 50,
    "aux_learning_rate": 1e-3, "aux_batch_size": 128, "precondition_aux": True,
    "fisher_examples": 0, "exact_obs_examples": 256, "sweep": (),
}
# Stream of the run's key that draws FishLeg Surgeon's probes and batches (see pruning_key).
_PRUNING_STREAM = 0x5EED


@flax.struct.dataclass
class PruneState:
  """The pruning part of a :class:`gnrev.train.TrainState` (saved in every checkpoint).

  Attributes:
    masks: params-shaped bool masks (``True`` = the weight survives).
    surgeon: FishLeg Surgeon's :class:`gnrev.prune.SurgeonState` (Q carried between pruning
      steps: refined, not re-fitted), else None.
    count: int32 number of pruning steps done.
  """
  masks: Any
  surgeon: Any
  count: jax.Array


def pruning_options(config: ml_collections.ConfigDict, run: str) -> dict | None:
  """Run ``run``'s pruning fields (``config.pruning`` overridden by the run's own), defaults
  filled in; None when the run does not prune.

  Raises:
    ValueError: for a field that is not in :data:`DEFAULTS` (naming the allowed ones).
  """
  shared = config.get("pruning") or {}
  own = config.optimizers[run].get("pruning") or {}
  if not shared and not own:
    return None
  fields = {**dict(shared), **dict(own)}
  unknown = sorted(set(fields) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown pruning field(s) {', '.join(unknown)}; allowed: "
                     f"{', '.join(DEFAULTS)}.")
  return {**DEFAULTS, **fields}


def schedule(options: dict) -> list[tuple[int, float]]:
  """``[(step, target sparsity), ...]``: after training step ``step`` (0: before any), prune to
  ``target``; ascending in both."""
  if options["schedule"] == "one_shot":
    return [(int(options["start"]), float(options["sparsity"]))]
  targets = prune.cubic_sparsity_schedule(float(options["sparsity"]), int(options["num_steps"]),
                                          float(options["initial_sparsity"]))
  return [(int(options["start"]) + k * int(options["every"]), t) for k, t in enumerate(targets)]


def _check_options(options: dict, run: str) -> None:
  where = f"Run {run!r}: pruning"
  if options["method"] not in METHODS:
    raise ValueError(f"{where}.method {options['method']!r} is unknown; allowed: "
                     f"{', '.join(METHODS)}.")
  if options["ranking"] not in prune.RANKINGS:
    raise ValueError(f"{where}.ranking {options['ranking']!r} is unknown; allowed: "
                     f"{', '.join(prune.RANKINGS)}.")
  if options["schedule"] not in SCHEDULES:
    raise ValueError(f"{where}.schedule {options['schedule']!r} is unknown; allowed: "
                     f"{', '.join(SCHEDULES)}.")
  for name in ("sparsity", "initial_sparsity"):
    value = options[name]
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise ValueError(f"{where}.{name} must be a number in [0, 1), got {value!r}.")
  if options["initial_sparsity"] > options["sparsity"]:
    raise ValueError(f"{where}.initial_sparsity {options['initial_sparsity']} exceeds "
                     f"sparsity {options['sparsity']}.")
  minimum = {"num_steps": 1, "every": 0, "start": 0, "fit_steps": 1, "refine_steps": 1,
             "aux_batch_size": 1, "fisher_examples": 0, "exact_obs_examples": 1}
  for name, low in minimum.items():
    value = options[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise ValueError(f"{where}.{name} must be an int >= {low}, got {options[name]!r}.")
  if options["schedule"] == "one_shot" and options["num_steps"] != 1:
    raise ValueError(f"{where}.num_steps={options['num_steps']} needs schedule 'cubic' "
                     f"(a one-shot schedule prunes once).")
  for name in ("damping", "aux_learning_rate"):
    value = options[name]
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
      raise ValueError(f"{where}.{name} must be a finite number > 0, got {value!r}.")
  if options["q_family"] not in optim.Q_FAMILIES:
    raise ValueError(f"{where}.q_family {options['q_family']!r} is unknown; allowed: "
                     f"{', '.join(optim.Q_FAMILIES)}.")
  sweep = options["sweep"]
  if not isinstance(sweep, (tuple, list)) or not all(
      isinstance(v, (int, float)) and 0 <= v < 1 for v in sweep):
    raise ValueError(f"{where}.sweep must be a tuple of sparsities in [0, 1), got {sweep!r}.")
  if not isinstance(options["precondition_aux"], bool):
    raise ValueError(f"{where}.precondition_aux must be a bool, got "
                     f"{options['precondition_aux']!r}.")


def check_pruning(config: ml_collections.ConfigDict, model, example: Any,
                  total_steps: int) -> None:
  """Start-up check of every run's pruning section: its fields, that the schedule fits in the
  run's ``total_steps`` and that exact OBS is asked only of small models (``model`` on the input
  ``example``).

  Raises:
    ValueError: naming the run, the field, the value and what is allowed.
  """
  for run in config.optimizers:
    options = pruning_options(config, run)
    if options is None:
      continue
    _check_options(options, run)
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
  """The key of FishLeg Surgeon's probes and batches, from a train state's ``rng`` key data.

  One key per run: each refinement folds it with the aux-step count
  (:func:`gnrev.prune.q_refiner`), so every refinement continues the stream.
  """
  return jax.random.fold_in(jax.random.wrap_key_data(rng_data), _PRUNING_STREAM)


class PruningHook:
  """A run's pruning, built once per run: the optimizer it chains, the state it adds, and the
  ``after_step`` hook of its :class:`gnrev.train.Program` that prunes on the schedule.

  It stages (``jax.jit``) the :mod:`gnrev.prune` functions it calls once, for this run.

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
    """The run's :class:`gnrev.train.OptimizerSetup` chained with :func:`prune.keep_masked`
    (masks filled in by :meth:`init_state`)."""
    return setup._replace(tx=optax.chain(setup.tx, prune.keep_masked(None)))

  def init_state(self, state):
    """``state`` with dense masks in its :class:`PruneState` and its ``keep_masked`` state, and an
    initial FishLeg Surgeon state (the structure every checkpoint of the run has)."""
    masks = prune.dense_masks(state.params)
    surgeon = None
    if self.options["method"] == "fishleg_surgeon":
      surgeon = prune.init_surgeon(state.params, self.options["damping"], None,
                                   self.options["q_family"])
    return state.replace(pruning=PruneState(masks=masks, surgeon=surgeon, count=jnp.int32(0)),
                         opt_state=prune.replace_masks(state.opt_state, masks))

  def _inverse(self, state):
    """``(inverse Fisher, surgeon state, extra metrics)`` of ``options["method"]`` at ``state``."""
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
    """One pruning step of ``state`` to ``target`` (compensated, exact zeros), the masks written
    to its :class:`PruneState` and its ``keep_masked`` state.

    Returns:
      ``(state, extra, swept)``: the pruned state, metrics of the step (``surgeon_aux_loss``)
      and ``{sparsity: params}`` of ``state`` pruned by the same curvature to each of ``sweep``.
    """
    params, masks, ranking = state.params, state.pruning.masks, self.options["ranking"]
    inverse, surgeon, extra = self._inverse(state)
    swept = {s: prune.obs_prune(params, masks, s, inverse, ranking)[1] for s in sweep}
    masks, params = prune.obs_prune(params, masks, target, inverse, ranking)
    state = state.replace(params=params, opt_state=prune.replace_masks(state.opt_state, masks),
                          pruning=PruneState(masks=masks, surgeon=surgeon,
                                             count=state.pruning.count + 1))
    return state, extra, swept

  def after_step(self, state, step: int, record: dict):
    """Runs the pruning steps scheduled at ``step`` (evaluating right after them as
    ``pruned_*``) and adds ``sparsity`` to any record holding an evaluation."""
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
