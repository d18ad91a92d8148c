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

import collections
import functools
import hashlib
import math
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gnrev import curvature, optim, prune

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


def prunes(config: ml_collections.ConfigDict) -> bool:
  """Whether any run of ``config`` prunes."""
  return any(config.get("pruning") or config.optimizers[run].get("pruning")
             for run in config.optimizers)


def schedule(options: dict) -> list[tuple[int, float]]:
  """``[(step, target sparsity), ...]``: after training step ``step`` (0: before any), prune to
  ``target``; ascending in both."""
  if options["schedule"] == "one_shot":
    return [(int(options["start"]), float(options["sparsity"]))]
  targets = prune.cubic_sparsity_schedule(float(options["sparsity"]), int(options["num_steps"]),
                                          float(options["initial_sparsity"]))
  return [(int(options["start"]) + k * int(options["every"]), t) for k, t in enumerate(targets)]


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
    if not _is_int(options[name]) or options[name] < low:
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


def check_pruning(config: ml_collections.ConfigDict, model=None, example: Any = None,
                  total_steps: int | None = None) -> None:
  """Start-up check of every run's pruning section.

  With the model, an example input and the run's number of training steps, also that the
  schedule fits in the run and that exact OBS is asked only of small models.

  Raises:
    ValueError: naming the run, the field, the value and what is allowed.
  """
  num_params = None
  if model is not None and prunes(config):
    shapes = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(shapes))
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
    if total_steps is not None and last > total_steps:
      raise ValueError(
          f"Run {run!r}: the pruning schedule's last step ({last} = start + every * "
          f"(num_steps - 1)) is after the run's last step ({total_steps} = num_epochs x steps "
          f"per epoch); lower pruning.every / num_steps / start or train longer.")
    if (num_params is not None and options["method"] == "exact_obs"
        and num_params > EXACT_OBS_MAX_PARAMS):
      raise ValueError(f"Run {run!r}: pruning.method 'exact_obs' inverts a dense P x P Fisher; "
                       f"the model has P={num_params} > {EXACT_OBS_MAX_PARAMS} parameters. Use "
                       f"fishleg_surgeon or diagonal_fisher.")


def wrap_optimizer(options: dict | None, setup):
  """The run's :class:`gnrev.train.OptimizerSetup` chained with :func:`prune.keep_masked`
  (masks filled in by :func:`init_state`); unchanged for a run that does not prune."""
  if options is None:
    return setup
  return setup._replace(tx=optax.chain(setup.tx, prune.keep_masked(None)))


def init_state(options: dict | None, state):
  """``state`` with dense masks in its :class:`PruneState` and its ``keep_masked`` state, and an
  initial FishLeg Surgeon state (the structure every checkpoint of the run has)."""
  if options is None:
    return state
  masks = prune.dense_masks(state.params)
  surgeon = None
  if options["method"] == "fishleg_surgeon":
    surgeon = prune.init_surgeon(state.params, options["damping"], None, options["q_family"])
  return state.replace(pruning=PruneState(masks=masks, surgeon=surgeon, count=jnp.int32(0)),
                       opt_state=prune.replace_masks(state.opt_state, masks))


def pruning_key(rng_data: jax.Array) -> jax.Array:
  """The key of FishLeg Surgeon's probes and batches, from a train state's ``rng`` key data.

  One key per run: :func:`gnrev.prune.refine_q` folds it with its aux-step count, so every
  refinement continues the stream.
  """
  return jax.random.fold_in(jax.random.wrap_key_data(rng_data), _PRUNING_STREAM)


# One apply function and likelihood object per model / likelihood kind: gnrev.prune caches its
# compiled aux loops and per-example gradients on them, so runs of one launch share compilations.
@functools.lru_cache(maxsize=None)
def _apply_fn(model) -> Callable:
  return lambda params, x: model.apply({"params": params}, x)


@functools.lru_cache(maxsize=None)
def _likelihood(name: str) -> curvature.Likelihood:
  return curvature.get_likelihood(name)


def digest(*trees) -> str:
  """A content hash of arrays (host copies of every leaf, with shapes and dtypes)."""
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(trees):
    array = np.asarray(leaf)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


class _Memo:
  """In-process memo of the curvature at a given model (bounded, least recently used first out).

  Runs of one launch that start from the same checkpoint (one-shot pruning to several sparsities,
  both rankings, the first step of gradual pruning) need the same empirical Fisher and the same
  fitted Q: a pure function of the parameters, masks, data, key and options, so computing it once
  changes no result (``tests/train/test_pruning.py`` checks the equality).
  """

  def __init__(self, size: int = 8):
    self.size, self.items = size, collections.OrderedDict()

  def get(self, key, compute: Callable):
    if key in self.items:
      self.items.move_to_end(key)
      return self.items[key]
    value = self.items[key] = compute()
    while len(self.items) > self.size:
      self.items.popitem(last=False)
    return value


_MEMO = _Memo()


def prune_state(state, options: dict, target: float, apply_fn: Callable,
                likelihood: curvature.Likelihood, x: jax.Array, labels: jax.Array,
                data_digest: str | None = None, sweep=()):
  """One pruning step of ``state`` to ``target`` by ``options["method"]`` (compensated, exact
  zeros), the masks written to its :class:`PruneState` and its ``keep_masked`` state.

  ``data_digest`` (:func:`digest` of ``x`` and ``labels``) turns on the in-process memo of the
  empirical Fisher and of FishLeg Surgeon's first fit (:class:`_Memo`); None computes them.

  Returns:
    ``(state, extra, swept)``: the pruned state, metrics of the step (``surgeon_aux_loss``) and
    ``{sparsity: params}`` of ``state`` pruned by the same curvature to each of ``sweep``.
  """
  params, pruned = state.params, state.pruning
  masks, surgeon, extra = pruned.masks, pruned.surgeon, {}
  method, damping = options["method"], options["damping"]
  at = digest(params, masks) if data_digest is not None else None
  memo = (lambda key, compute: _MEMO.get((at, data_digest, *key), compute)) if at else (
      lambda key, compute: compute())
  squared_gradients = lambda: memo(("squared",), lambda: prune.mean_squared_gradients(
      apply_fn, params, x, labels, likelihood))
  if method == "magnitude":
    inverse = prune.magnitude_inverse(params)
  elif method == "diagonal_fisher":
    inverse = prune.diagonal_fisher_inverse(squared_gradients(), damping)
  elif method == "exact_obs":
    inverse = prune.exact_inverse_fisher(apply_fn, params, masks,
                                         x[:options["exact_obs_examples"]], likelihood, damping)
  else:
    first = int(pruned.count) == 0
    refine = functools.partial(
        prune.refine_q, apply_fn=apply_fn, params=params, masks=masks, x=x,
        likelihood=likelihood, rng=pruning_key(state.rng), damping=damping,
        batch_size=int(options["aux_batch_size"]),
        aux_learning_rate=float(options["aux_learning_rate"]),
        precondition_aux=bool(options["precondition_aux"]))
    if first:  # FLS's diagonal warm start at the model being pruned, then the full fit
      fit_key = ("fit", digest(state.rng), *(options[k] for k in (
          "damping", "q_family", "fit_steps", "aux_batch_size", "aux_learning_rate",
          "precondition_aux")))
      surgeon = memo(fit_key, lambda: refine(
          prune.init_surgeon(params, damping, squared_gradients(), options["q_family"]),
          num_steps=int(options["fit_steps"])))
    else:
      surgeon = refine(surgeon, num_steps=int(options["refine_steps"]))
    inverse = prune.fishleg_inverse(surgeon, params, masks)
    extra["surgeon_aux_loss"] = float(surgeon.aux_loss)
  swept = {s: prune.obs_prune(params, masks, s, inverse, options["ranking"])[1] for s in sweep}
  masks, params = prune.obs_prune(params, masks, target, inverse, options["ranking"])
  state = state.replace(params=params, opt_state=prune.replace_masks(state.opt_state, masks),
                        pruning=PruneState(masks=masks, surgeon=surgeon,
                                           count=pruned.count + 1))
  return state, extra, swept


def make_hook(options: dict | None, model, fixed: dict, task, train, evaluate: Callable):
  """The run's ``after_step`` hook (:class:`gnrev.train.Program`), None if it does not prune.

  ``hook(state, step, record) -> (state, record)``: runs the pruning steps scheduled at
  ``step`` (evaluating right after them as ``pruned_*``) and adds ``sparsity`` to any record
  holding an evaluation.
  """
  if options is None:
    return None
  if fixed:
    raise ValueError("pruning supports models without non-trained variables (MLP, CNN, ...).")
  apply_fn = _apply_fn(model)
  likelihood = (_likelihood(task.likelihood.name) if task.likelihood.name != "gaussian"
                else task.likelihood)
  count = int(options["fisher_examples"]) or len(train.y)
  x = jnp.asarray(train.x[:count])
  targets = task.targets(train)[:count]
  # Fisher statistics need the likelihood's own targets: class labels for the categorical.
  labels = jnp.asarray(np.argmax(targets, -1) if likelihood.name == "categorical" else targets)
  data_digest = digest(x, labels)
  plan = schedule(options)

  def hook(state, step: int, record: dict):
    due = [target for at, target in plan if at == step]
    if due:
      start, extra = time.time(), {}
      for target in due:
        sweep = tuple(options["sweep"]) if int(state.pruning.count) == 0 else ()
        state, extra, swept = prune_state(state, options, target, apply_fn, likelihood, x,
                                          labels, data_digest, sweep)
        for sparsity, params in swept.items():
          record.update({f"sweep{round(100 * sparsity)}_{k}": v
                         for k, v in evaluate(params).items()})
      record = {**record, "prune_target": due[-1], **extra,
                "prune_seconds": time.time() - start,
                **{f"pruned_{k}": v for k, v in evaluate(state.params).items()}}
    if due or any(k.startswith(("test_", "val_")) for k in record):
      record = {**record, "sparsity": float(prune.sparsity(state.pruning.masks))}
    return state, record

  return hook
