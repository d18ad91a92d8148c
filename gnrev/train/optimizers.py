"""Optimizers by name: each entry builds an optax transform and the extra step arguments it needs.

A registry entry is a small factory ``make(options, model) -> OptimizerSetup`` whose options
(``name``, ``learning_rate`` and those listed with their defaults in :data:`OPTIONS`) come from
:func:`optimizer_options`, which rejects any other config field. The training
step calls ``setup.extra_args(params, fixed, batch, rng)`` inside jit and forwards the result as
keyword arguments to ``tx.update`` (optax's extra-args protocol), so a transform that needs the
batch (Gauss-Newton), the fixed variables (exact GN) or a Fisher-vector product and a key
(FishLeg) gets them, and the others ignore them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax

from gnrev import curvature, gn, optim


class OptimizerSetup(NamedTuple):
  tx: optax.GradientTransformationExtraArgs
  # (params, fixed, batch=(x, y_onehot), rng) -> keyword arguments for tx.update
  extra_args: Callable[..., dict]


def _no_extra_args(params, fixed, batch, rng) -> dict:
  del params, fixed, batch, rng
  return {}


# Every optimizer's options besides ``name`` and ``learning_rate``, with their defaults. A config
# field not listed here is an error (a misspelt option must not silently fall back to a default).
OPTIONS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.0, "nesterov": False},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "exact_gn": {"loss": "ce_identity", "allocation": "full", "solver": "cholesky", "rtol": 0.0,
                 "atol": 0.0, "damping": 0.0},
    "gauss_newton": {"loss": "ce_identity", "damping": 0.0, "maxiter": None, "tol": 1e-6},
    "fishleg": {"damping": 0.5, "aux_learning_rate": 1e-4, "update_aux_every": 10,
                "momentum": 0.9, "weight_decay": 0.0, "init_scale": 1.0, "probe": "gradient",
                "precondition_aux": True, "q_family": "kronecker"},
}


def optimizer_options(opt_config: Any) -> dict[str, Any]:
  """``name``, ``learning_rate`` and the options of ``opt_config.name``, defaults filled in.

  Raises:
    ValueError: for an unknown optimizer, a missing ``learning_rate`` or a field the optimizer
      does not have (the message lists the allowed ones).
  """
  fields = dict(opt_config)
  name = fields.pop("name", None)
  if name not in OPTIONS:
    raise ValueError(
        f"Unknown optimizer {name!r}; allowed: {', '.join(sorted(OPTIONS))}.")
  if "learning_rate" not in fields:
    raise ValueError(f"Optimizer {name!r} needs a learning_rate.")
  unknown = sorted(set(fields) - {"learning_rate"} - set(OPTIONS[name]))
  if unknown:
    allowed = ", ".join(["name", "learning_rate", *OPTIONS[name]])
    raise ValueError(f"Unknown field(s) {', '.join(unknown)} for optimizer {name!r}; "
                     f"allowed: {allowed}.")
  return {"name": name, **OPTIONS[name], **fields}


def _sgd(options: dict, model: nn.Module) -> OptimizerSetup:
  del model
  tx = optax.sgd(options["learning_rate"], momentum=options["momentum"] or None,
                 nesterov=options["nesterov"])
  return OptimizerSetup(optax.with_extra_args_support(tx), _no_extra_args)


def _adam(options: dict, model: nn.Module) -> OptimizerSetup:
  del model
  tx = optax.adam(options["learning_rate"], b1=options["b1"], b2=options["b2"],
                  eps=options["eps"])
  return OptimizerSetup(optax.with_extra_args_support(tx), _no_extra_args)


def apply_fn_of(model: nn.Module, fixed: dict) -> Callable[[Any, jax.Array], jax.Array]:
  """``(params, x) -> logits`` for ``model`` with its non-trained variables ``fixed``."""
  return lambda params, x: model.apply({"params": params, **fixed}, x)


def fisher_vector_product(model: nn.Module, params, fixed: dict, x: jax.Array):
  """``v -> F v`` for the softmax likelihood on the batch ``x`` (exact, = the GGN)."""
  return curvature.ggn_vector_product(apply_fn_of(model, fixed), params, x,
                                      curvature.categorical())


def _exact_gn(options: dict, model: nn.Module) -> OptimizerSetup:
  tx = gn.exact_gn(options["learning_rate"], model=model, loss=options["loss"],
                   allocation=options["allocation"], solver=options["solver"],
                   rtol=options["rtol"], atol=options["atol"], damping=options["damping"])
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch,
                                                               "fixed": fixed["fixed"]})


def _gauss_newton(options: dict, model: nn.Module) -> OptimizerSetup:
  # The model's non-trained variables travel as the step's `fixed` argument (never closed over).
  tx = gn.gauss_newton(options["learning_rate"],
                       apply_fn=lambda p, x, fixed: model.apply({"params": p, **fixed}, x),
                       loss=options["loss"], damping=options["damping"],
                       maxiter=options["maxiter"], tol=options["tol"])
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch, "fixed": fixed})


def _fishleg(options: dict, model: nn.Module) -> OptimizerSetup:
  tx = optim.fishleg(options["learning_rate"], damping=options["damping"],
                     aux_learning_rate=options["aux_learning_rate"],
                     update_aux_every=options["update_aux_every"],
                     momentum=options["momentum"], weight_decay=options["weight_decay"],
                     init_scale=options["init_scale"], probe=options["probe"],
                     precondition_aux=options["precondition_aux"],
                     q_family=options["q_family"])
  # fvp_fn linearises when called, i.e. inside FishLeg's aux-step branch: its forward pass then
  # runs on aux steps only (benchmarks/fishleg_step.py measures the difference).
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {
      "fvp_fn": lambda v: fisher_vector_product(model, params, fixed, batch[0])(v), "rng": rng})


OPTIMIZERS: dict[str, Callable[[dict, nn.Module], OptimizerSetup]] = {
    "sgd": _sgd,
    "adam": _adam,
    "exact_gn": _exact_gn,
    "gauss_newton": _gauss_newton,
    "fishleg": _fishleg,
}


def build_optimizer(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  """The optimizer named by ``opt_config.name`` (see :data:`OPTIMIZERS` and :data:`OPTIONS`)."""
  options = optimizer_options(opt_config)
  return OPTIMIZERS[options["name"]](options, model)
