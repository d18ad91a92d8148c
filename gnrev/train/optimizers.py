"""Optimizers by name: each entry is a wing's optax factory, its step arguments and its check.

An :class:`Optimizer` entry of :data:`OPTIMIZERS` holds

* ``factory``: the optax factory itself (``optax.adam``, ``gn.exact_gn``, ``optim.fishleg``...).
  A run's options are that factory's keyword arguments, their defaults read from its signature
  (:func:`factory_options`; :data:`OPTIONS` is that view for every entry), so a config can set
  any of them and a misspelt one is an error naming the allowed ones;
* ``supplied``: the factory arguments the trainer fills in (the model, its apply function);
* ``extra_args``: ``(model, task) -> (params, fixed, batch, rng) -> kwargs`` for ``tx.update``
  (optax's extra-args protocol), called inside the jitted step: the batch for Gauss-Newton, the
  fixed variables for exact GN, a Fisher-vector product of the task's likelihood, a key and the
  Dense layers' per-example inputs and output gradients for FishLeg;
* ``rules``: the ranges of its options (:class:`gnrev.train.rules.Rule` by option name; an
  option without one must have its default's type, and every ``learning_rate`` is > 0);
* ``check``: ``(options, model, task, input_shape, batch_size) -> None``, run at start-up before
  any run trains; it calls the wing's own validator (e.g. exact GN's rank bounds);
* ``needs_model``: whether the step needs a supervised model and batch (the model, its apply
  function, the batch or a Fisher product of the task's likelihood): such optimizers cannot be
  the outer optimizer of meta-learning;
* ``needs_autodiff``: whether the step differentiates forwards (``jax.jvp``: FishLeg's
  Fisher-vector products, the min-norm GN's Jacobian products), which a RevMLP's memory-saving
  custom VJPs do not support (``model.memory_mode`` must be ``"autodiff"``).

A new optimizer is one self-contained entry of :data:`OPTIMIZERS`.
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
from gnrev.gn import sweep as gn_sweep, targets as gn_targets
from gnrev.train import rules

ExtraArgs = Callable[..., dict]


class OptimizerSetup(NamedTuple):
  tx: optax.GradientTransformationExtraArgs
  # (params, fixed, batch=(x, targets), rng) -> keyword arguments for tx.update
  extra_args: ExtraArgs


def no_extra_args(params, fixed, batch, rng) -> dict:
  del params, fixed, batch, rng
  return {}


def _no_check(options, model, task, input_shape, batch_size) -> None:
  del options, model, task, input_shape, batch_size


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A registry entry (see the module docstring).

  Attributes:
    factory: the optax factory; its first argument is ``learning_rate``.
    supplied: ``(model, task) -> {argument: value}`` for factory arguments a config cannot hold.
    extra_args: ``(model, task, **options) -> ExtraArgs`` for ``tx.update``, given the run's
      options named in ``extra_args_options``.
    rules: ranges of options, by name (see :meth:`rule`).
    check: start-up check of a run's options against the model, task and data sizes.
    excluded: factory arguments that are neither options nor supplied (kept at their default).
    supplied_names: the factory arguments ``supplied`` fills in.
    needs_model: the step needs a supervised model and batch (see the module docstring).
    needs_autodiff: the step uses forward-mode autodiff (see the module docstring).
  """
  factory: Callable[..., optax.GradientTransformation]
  supplied: Callable[[nn.Module, Any], dict] = lambda model, task: {}
  extra_args: Callable[..., ExtraArgs] = lambda model, task: no_extra_args
  extra_args_options: tuple[str, ...] = ()
  rules: dict[str, rules.Rule] = dataclasses.field(default_factory=dict)
  check: Callable[..., None] = _no_check
  excluded: tuple[str, ...] = ()
  supplied_names: tuple[str, ...] = ()
  needs_model: bool = False
  needs_autodiff: bool = False

  @property
  def options(self) -> dict[str, Any]:
    """The factory's keyword arguments a config may set, with their defaults."""
    return factory_options(self.factory, skip=("learning_rate", *self.supplied_names,
                                               *self.excluded))

  def rule(self, option: str) -> rules.Rule | None:
    """What ``option`` may hold: its rule, else its default's type (None: anything)."""
    if option == "learning_rate":
      return rules.POSITIVE
    return self.rules.get(option) or rules.of_default(self.options.get(option))


def factory_options(factory: Callable, skip: tuple[str, ...] = ()) -> dict[str, Any]:
  """``{argument: default}`` of ``factory``'s parameters that have a default, minus ``skip``."""
  return {p.name: p.default for p in inspect.signature(factory).parameters.values()
          if p.name not in skip and p.default is not inspect.Parameter.empty
          and p.kind is not inspect.Parameter.VAR_KEYWORD}


def apply_fn_of(model: nn.Module, fixed: dict) -> Callable[[Any, jax.Array], jax.Array]:
  """``(params, x) -> outputs`` for ``model`` with its non-trained variables ``fixed``."""
  return lambda params, x: model.apply({"params": params, **fixed}, x)


def fisher_vector_product(model: nn.Module, params, fixed: dict, x: jax.Array,
                          likelihood: curvature.Likelihood | None = None):
  """``v -> F v`` on the batch ``x`` for ``likelihood`` (default: softmax; exact, = the GGN)."""
  likelihood = curvature.categorical() if likelihood is None else likelihood
  return curvature.ggn_vector_product(apply_fn_of(model, fixed), params, x, likelihood)


def _check_gn_loss(options: dict, task: Any) -> None:
  gn_targets.check_loss(options["loss"])
  if options["loss"] not in task.gn_losses:
    fits = ", ".join(task.gn_losses) or "none"
    raise ValueError(f"loss {options['loss']!r} is not the Gauss-Newton model of task "
                     f"{task.name!r} (likelihood {task.likelihood.name!r}); losses that fit: "
                     f"{fits}.")


def _check_exact_gn(options: dict, model: nn.Module, task: Any, input_shape: tuple,
                    batch_size: int) -> None:
  if not hasattr(model, "activations"):
    raise ValueError(f"exact_gn needs model 'revmlp' (a reversible net), got "
                     f"{type(model).__name__}.")
  _check_gn_loss(options, task)
  if options["solver"] not in gn.SOLVERS:
    raise ValueError(f"Unknown solver {options['solver']!r}; allowed: {', '.join(gn.SOLVERS)}.")
  gn.allocation_weights(options["allocation"], model.num_blocks, jax.numpy.float32)
  gn_sweep.check_batch_fits(model, batch_size, math.prod(input_shape[1:]), options["solver"])


def _check_gauss_newton(options, model, task, input_shape, batch_size) -> None:
  del model, input_shape, batch_size
  _check_gn_loss(options, task)


def _fishleg_extra_args(model: nn.Module, task: Any, q_family: str) -> ExtraArgs:
  likelihood = task.likelihood

  def extra_args(params, fixed, batch, rng):
    x, targets = batch
    # The Dense layers' per-example inputs and output gradients of the training loss on this
    # batch, for q_family="kronecker_per_example" (the other families take none).
    per_example = None
    if q_family == "kronecker_per_example":
      _, _, per_example = optim.value_grad_and_per_example(
          model, params, x, lambda outputs: task.loss(outputs, targets), fixed=fixed)
    # fvp_fn linearises when called, i.e. inside FishLeg's aux-step branch: its forward pass
    # then runs on aux steps only (benchmarks/fishleg_step.py measures the difference).
    return {"fvp_fn": lambda v: fisher_vector_product(model, params, fixed, x, likelihood)(v),
            "rng": rng, "per_example": per_example}

  return extra_args


def _sophia_extra_args(model: nn.Module, task: Any) -> ExtraArgs:
  # Sophia's default Hessian-diagonal estimator (Hutchinson's) needs the loss of the current
  # batch as a function of the params only: optax's `obj_fn` extra argument.
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
               "allocation": rules.Rule("custom"),  # a name or per-block weights: the check's
               "rtol": rules.number(0, 1, high_open=True), "atol": rules.NON_NEGATIVE,
               "damping": rules.NON_NEGATIVE, "keep_activations": rules.BOOL}),
    "gauss_newton": Optimizer(
        # The model's non-trained variables travel as the step's `fixed` argument (never
        # closed over).
        gn.gauss_newton,
        supplied=lambda model, task: {
            "apply_fn": lambda p, x, fixed: model.apply({"params": p, **fixed}, x)},
        supplied_names=("apply_fn",),
        extra_args=lambda model, task: (
            lambda params, fixed, batch, rng: {"batch": batch, "fixed": fixed}),
        check=_check_gauss_newton, needs_model=True, needs_autodiff=True,
        rules={"loss": _GN_LOSS, "damping": rules.NON_NEGATIVE,
               "maxiter": rules.integer(1, optional=True), "tol": rules.POSITIVE}),
    # aux_optimizer is a transform, which a config cannot hold: FishLeg's default (Adam) stays.
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
    # Peers of FishLeg (benchmarks): transforms a config cannot hold keep their defaults.
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
  """PSGD-Kron from the optional ``psgdax`` (``pip install 'gnrev[peers]'``), imported here.

  Its options that a config can hold are restated (tests/train check them against
  ``psgdax.kron``'s signature) because importing ``psgdax`` at gnrev's import would create a JAX
  array, i.e. start JAX's backends, before a multi-process launch may call
  ``jax.distributed.initialize``.
  """
  return importlib.import_module("psgdax").kron(**locals())


if importlib.util.find_spec("psgdax") is not None:
  OPTIMIZERS["psgd_kron"] = Optimizer(psgd_kron)
# Entries that need an optional package, and how to get it.
OPTIONAL_OPTIMIZERS = {"psgd_kron": "psgdax (pip install 'gnrev[peers]')"}

# Every optimizer's options besides ``name`` and ``learning_rate``, with their defaults: a view
# of the factories' signatures. A config field not listed here is an error (a misspelt option
# must not silently fall back to a default).
OPTIONS: dict[str, dict[str, Any]] = {name: entry.options for name, entry in OPTIMIZERS.items()}


def optimizer_options(opt_config: Any, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
  """``name``, ``learning_rate`` and the options of ``opt_config.name``, defaults filled in.

  Args:
    opt_config: a run's config (``config.optimizers.<run>``).
    reserved: run fields owned by the task (e.g. meta-learning's ``inner``), left out.

  Raises:
    ValueError: for an unknown optimizer, a missing ``learning_rate`` or a field the optimizer
      does not have (the message lists the allowed ones).
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


def _setup(options: dict, model: nn.Module, task: Any) -> OptimizerSetup:
  """The factory called once (it validates its own arguments), with the entry's step args."""
  entry = OPTIMIZERS[options["name"]]
  kwargs = {k: v for k, v in options.items() if k != "name"}
  tx = entry.factory(**kwargs, **entry.supplied(model, task))
  return OptimizerSetup(optax.with_extra_args_support(tx), entry.extra_args(model, task, **{
      name: options[name] for name in entry.extra_args_options}))


def check_optimizer(opt_config: Any, model: nn.Module, task: Any, input_shape: tuple,
                    batch_size: int, reserved: tuple[str, ...] = ()) -> OptimizerSetup:
  """Start-up check of one run: its options, the entry's check and the factory's own validation.

  Returns:
    The run's :class:`OptimizerSetup` (what :func:`build_optimizer` gives), for the run to use.

  Raises:
    ValueError: naming what does not fit.
  """
  options = optimizer_options(opt_config, reserved)
  OPTIMIZERS[options["name"]].check(options, model, task, tuple(input_shape), batch_size)
  return _setup(options, model, task)


def build_optimizer(opt_config: Any, model: nn.Module, task: Any,
                    reserved: tuple[str, ...] = ()) -> OptimizerSetup:
  """The optimizer named by ``opt_config.name`` (see :data:`OPTIMIZERS` and :data:`OPTIONS`).

  Args:
    opt_config: the run's config: ``name``, ``learning_rate`` and options.
    model: the flax model it trains.
    task: the run's task (:mod:`gnrev.train.tasks`): its likelihood gives FishLeg's
      Fisher-vector products.
    reserved: run fields owned by the task, ignored here.
  """
  return _setup(optimizer_options(opt_config, reserved), model, task)
