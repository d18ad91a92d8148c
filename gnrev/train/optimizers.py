"""Optimizers by name: each :class:`Optimizer` entry of :data:`OPTIMIZERS` is an optax factory
with what the trainer must know about it.

A run's options are the factory's keyword arguments (defaults from its signature; a misspelt one
is an error naming the allowed ones). Steps get extra arguments through optax's extra-args
protocol (``tx.update(..., **extra_args(params, fixed, batch, rng))``). A new optimizer is one
entry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax

from gnrev import curvature, gn, optim
from gnrev.gn import sweep as gn_sweep
from gnrev.train import rules

ExtraArgs = Callable[..., dict]


class OptimizerSetup(NamedTuple):
  tx: optax.GradientTransformationExtraArgs
  # (params, fixed, batch=(x, targets), rng) -> keyword arguments for tx.update
  extra_args: ExtraArgs


def no_extra_args(params, fixed, batch, rng) -> dict:
  del params, fixed, batch, rng
  return {}


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A registry entry.

  Attributes:
    factory: the optax factory; its first argument is ``learning_rate``.
    supplied: ``(model, task) -> {argument: value}``, factory arguments a config cannot hold
      (named in ``supplied_names``).
    extra_args: ``(model, task, **options) -> ExtraArgs``, given the options named in
      ``extra_args_options``: the batch for Gauss-Newton, a Fisher-vector product and a key for
      FishLeg.
    rules: option ranges by name (:meth:`rule`).
    check: ``(options, model, task, input_shape, batch_size) -> None``, raising ``ValueError``
      for what only the model and data can tell (exact GN's rank bounds).
    excluded: factory arguments kept at their default (transforms a config cannot hold).
    needs_model: the step needs a supervised model and batch (so it cannot be meta-learning's
      outer optimizer).
    needs_autodiff: the step differentiates forwards (``jax.jvp``), which a RevMLP's
      memory-saving custom VJPs do not support.
  """
  factory: Callable[..., optax.GradientTransformation]
  supplied: Callable[[nn.Module, Any], dict] = lambda model, task: {}
  extra_args: Callable[..., ExtraArgs] = lambda model, task: no_extra_args
  extra_args_options: tuple[str, ...] = ()
  rules: dict[str, rules.Rule] = dataclasses.field(default_factory=dict)
  check: Callable[..., None] | None = None
  excluded: tuple[str, ...] = ()
  supplied_names: tuple[str, ...] = ()
  needs_model: bool = False
  needs_autodiff: bool = False

  @property
  def options(self) -> dict[str, Any]:
    """The factory's keyword arguments a config may set, with their defaults."""
    skip = ("learning_rate", *self.supplied_names, *self.excluded)
    return {p.name: p.default for p in inspect.signature(self.factory).parameters.values()
            if p.name not in skip and p.default is not inspect.Parameter.empty
            and p.kind is not inspect.Parameter.VAR_KEYWORD}

  def rule(self, option: str) -> rules.Rule | None:
    """What ``option`` may hold: its rule, else its default's type (None: anything)."""
    if option == "learning_rate":
      return rules.POSITIVE
    return self.rules.get(option) or rules.of_default(self.options.get(option))


def apply_fn_of(model: nn.Module, fixed: dict) -> Callable[[Any, jax.Array], jax.Array]:
  """``(params, x) -> outputs`` for ``model`` with its non-trained variables ``fixed``."""
  return lambda params, x: model.apply({"params": params, **fixed}, x)


def fisher_vector_product(model: nn.Module, params, fixed: dict, x: jax.Array,
                          likelihood: curvature.Likelihood | None = None):
  """``v -> F v`` on the batch ``x`` for ``likelihood`` (default: softmax; exact, = the GGN)."""
  likelihood = curvature.categorical() if likelihood is None else likelihood
  return curvature.ggn_vector_product(apply_fn_of(model, fixed), params, x, likelihood)


def _check_gn_loss(options: dict, model, task: Any, input_shape: tuple, batch_size: int) -> None:
  if options["loss"] not in task.gn_losses:
    raise ValueError(f"loss {options['loss']!r} is not the Gauss-Newton model of task "
                     f"{task.name!r} (likelihood {task.likelihood.name!r}); losses that fit: "
                     f"{', '.join(task.gn_losses) or 'none'}.")


def _check_exact_gn(options: dict, model, task: Any, input_shape: tuple,
                    batch_size: int) -> None:
  _check_gn_loss(options, model, task, input_shape, batch_size)
  gn_sweep.check_batch_fits(model, batch_size, math.prod(input_shape[1:]), options["solver"])


def _fishleg_extra_args(model: nn.Module, task: Any, q_family: str) -> ExtraArgs:
  def extra_args(params, fixed, batch, rng):
    x, targets = batch
    per_example = None  # the Dense layers' per-example inputs and output gradients
    if q_family == "kronecker_per_example":
      _, _, per_example = optim.value_grad_and_per_example(
          model, params, x, lambda outputs: task.loss(outputs, targets), fixed=fixed)
    # fvp_fn linearises when called, inside FishLeg's aux-step branch: on aux steps only.
    return {"fvp_fn": lambda v: fisher_vector_product(model, params, fixed, x,
                                                      task.likelihood)(v),
            "rng": rng, "per_example": per_example}

  return extra_args


def _sophia_extra_args(model: nn.Module, task: Any) -> ExtraArgs:
  # Hutchinson's Hessian-diagonal estimate needs the batch loss as a function of the params.
  return lambda params, fixed, batch, rng: {
      "obj_fn": lambda p: task.loss(apply_fn_of(model, fixed)(p, batch[0]), batch[1])}


_GN_LOSS = rules.choice(gn.LOSSES)
_FISHLEG_RULES = {"damping": rules.NON_NEGATIVE, "aux_learning_rate": rules.POSITIVE,
                  "update_aux_every": rules.integer(1), "momentum": rules.UNIT,
                  "weight_decay": rules.NON_NEGATIVE}

OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(optax.sgd, rules={"momentum": rules.optional(rules.UNIT),
                                       "nesterov": rules.BOOL}),
    "adam": Optimizer(optax.adam, rules={"b1": rules.UNIT, "b2": rules.UNIT,
                                         "eps": rules.NON_NEGATIVE}),
    "exact_gn": Optimizer(
        gn.exact_gn, supplied=lambda model, task: {"model": model}, supplied_names=("model",),
        extra_args=lambda model, task: (
            lambda params, fixed, batch, rng: {"batch": batch, "fixed": fixed["fixed"]}),
        check=_check_exact_gn, needs_model=True,
        rules={"loss": _GN_LOSS, "solver": rules.choice(gn.SOLVERS),
               "allocation": rules.Rule("custom"),  # a name or per-block weights: validation's
               "rtol": rules.number(0, 1, high_open=True), "atol": rules.NON_NEGATIVE,
               "damping": rules.NON_NEGATIVE, "keep_activations": rules.BOOL}),
    "gauss_newton": Optimizer(  # the model's non-trained variables travel as the step's `fixed`
        gn.gauss_newton,
        supplied=lambda model, task: {
            "apply_fn": lambda p, x, fixed: model.apply({"params": p, **fixed}, x)},
        supplied_names=("apply_fn",),
        extra_args=lambda model, task: (
            lambda params, fixed, batch, rng: {"batch": batch, "fixed": fixed}),
        check=_check_gn_loss, needs_model=True, needs_autodiff=True,
        rules={"loss": _GN_LOSS, "damping": rules.NON_NEGATIVE,
               "maxiter": rules.integer(1, optional=True), "tol": rules.POSITIVE}),
    "fishleg": Optimizer(optim.fishleg, extra_args=_fishleg_extra_args,
                         extra_args_options=("q_family",), excluded=("aux_optimizer",),
                         needs_model=True, needs_autodiff=True, rules={
                             **_FISHLEG_RULES, "aux_warmup_steps": rules.integer(0),
                             "init_scale": rules.optional(rules.POSITIVE),
                             "probe": rules.choice(optim.PROBES), "precondition_aux": rules.BOOL,
                             "q_family": rules.choice(optim.Q_FAMILIES),
                             "max_newton_steps": rules.optional(rules.POSITIVE)}),
    "fishleg_official": Optimizer(
        optim.fishleg_official, extra_args=lambda model, task: _fishleg_extra_args(
            model, task, q_family="kronecker"), needs_model=True, needs_autodiff=True,
        rules=_FISHLEG_RULES),
    # Peers of FishLeg (benchmarks).
    "sophia": Optimizer(optax.contrib.sophia, extra_args=_sophia_extra_args,
                        excluded=("weight_decay_mask", "hessian_diagonal_fn", "mu_dtype"),
                        needs_model=True),
    "muon": Optimizer(optax.contrib.muon,
                      excluded=("weight_decay_mask", "mu_dtype", "adam_learning_rate",
                                "muon_weight_dimension_numbers", "consistent_rms")),
}


def psgd_kron(learning_rate: float = 1e-3, b1: float = 0.9, weight_decay: float = 0.0,
              max_size_triangular: int = 8192, max_skew_triangular: float = 1.0,
              min_ndim_triangular: int = 2, whiten_grad: bool = True,
              preconditioner_lr: float = 0.1, lax_map_scanned_layers: bool = False,
              lax_map_batch_size: int = 8, beta_lipschitz: float = 0.9,
              track_lipschitz: bool = True, damping: float = 1e-9,
              grad_clip_max_amp: float = 1.0) -> optax.GradientTransformationExtraArgs:
  """PSGD-Kron of the optional ``psgdax`` (``pip install 'gnrev[peers]'``).

  Its options are restated here (a test compares them with ``psgdax.kron``'s signature) because
  importing ``psgdax`` creates a JAX array, which must wait for ``jax.distributed.initialize``.
  """
  return importlib.import_module("psgdax").kron(**locals())


if importlib.util.find_spec("psgdax") is not None:
  OPTIMIZERS["psgd_kron"] = Optimizer(psgd_kron)
# Entries that need an optional package, and how to get it.
OPTIONAL_OPTIMIZERS = {"psgd_kron": "psgdax (pip install 'gnrev[peers]')"}

# Every optimizer's options besides ``name`` and ``learning_rate``, with their defaults.
OPTIONS: dict[str, dict[str, Any]] = {name: entry.options for name, entry in OPTIMIZERS.items()}


def optimizer_options(opt_config: Any, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
  """``name``, ``learning_rate`` and every option of a run's optimizer, defaults filled in.

  ``reserved``: run fields owned by the task or the trainer (``inner``, ``pruning``), left out.

  Raises:
    ValueError: for an unknown optimizer, a missing ``learning_rate`` or an unknown option.
  """
  fields = {k: v for k, v in dict(opt_config).items() if k not in reserved}
  name = fields.pop("name", None)
  if name in OPTIONAL_OPTIMIZERS and name not in OPTIMIZERS:
    raise ValueError(f"Optimizer {name!r} needs {OPTIONAL_OPTIMIZERS[name]}.")
  if name not in OPTIMIZERS:
    raise ValueError(
        f"Unknown optimizer {name!r}; allowed: {', '.join(sorted(OPTIMIZERS))}.")
  if "learning_rate" not in fields:
    raise ValueError(f"Optimizer {name!r} needs a learning_rate.")
  options = OPTIMIZERS[name].options
  unknown = sorted(set(fields) - {"learning_rate"} - set(options))
  if unknown:
    allowed = ["name", "learning_rate", *options]
    hint = rules.did_you_mean(unknown[0], allowed)
    raise ValueError(f"Unknown field(s) {', '.join(unknown)} for optimizer {name!r}.{hint} "
                     f"Allowed: {', '.join(allowed)}.")
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return {"name": name, **options, **fields}


def check_optimizer(options: dict, model: nn.Module | None, task: Any, input_shape: tuple = (),
                    batch_size: int = 0) -> OptimizerSetup:
  """A run's optimizer, from its :func:`optimizer_options`, after the checks that need the model
  (None for meta-learning) and the data; the factory validates its own arguments.

  Raises:
    ValueError: naming what does not fit.
  """
  entry = OPTIMIZERS[options["name"]]
  memory_mode = getattr(model, "memory_mode", "autodiff")
  if entry.needs_autodiff and memory_mode != "autodiff":
    raise ValueError(f"{options['name']}'s steps use jax.jvp, which needs "
                     f"--config.model.memory_mode=autodiff; got {memory_mode!r}.")
  if entry.check is not None:
    entry.check(options, model, task, tuple(input_shape), batch_size)
  kwargs = {k: v for k, v in options.items() if k != "name"}
  tx = entry.factory(**kwargs, **entry.supplied(model, task))
  return OptimizerSetup(optax.with_extra_args_support(tx), entry.extra_args(model, task, **{
      name: options[name] for name in entry.extra_args_options}))


def build_optimizer(opt_config: Any, model: nn.Module, task: Any,
                    reserved: tuple[str, ...] = ()) -> OptimizerSetup:
  """The optimizer of a run's config (``name``, ``learning_rate`` and options) for ``model``
  and ``task`` (whose likelihood gives FishLeg's Fisher products)."""
  return check_optimizer(optimizer_options(opt_config, reserved), model, task)
