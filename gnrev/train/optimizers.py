"""Optimizers by name: each entry builds an optax transform and the extra step arguments it needs.

A registry entry is a small factory ``make(opt_config, model) -> OptimizerSetup``. The training
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


def _sgd(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  del model
  return OptimizerSetup(optax.with_extra_args_support(optax.sgd(opt_config.learning_rate)),
                        _no_extra_args)


def _adam(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  del model
  return OptimizerSetup(optax.with_extra_args_support(optax.adam(opt_config.learning_rate)),
                        _no_extra_args)


def apply_fn_of(model: nn.Module, fixed: dict) -> Callable[[Any, jax.Array], jax.Array]:
  """``(params, x) -> logits`` for ``model`` with its non-trained variables ``fixed``."""
  return lambda params, x: model.apply({"params": params, **fixed}, x)


def fisher_vector_product(model: nn.Module, params, fixed: dict, x: jax.Array):
  """``v -> F v`` for the softmax likelihood on the batch ``x`` (exact, = the GGN)."""
  return curvature.ggn_vector_product(apply_fn_of(model, fixed), params, x,
                                      curvature.categorical())


def _exact_gn(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  tx = gn.exact_gn(opt_config.learning_rate, model=model,
                   loss=opt_config.get("loss", "ce_identity"),
                   allocation=opt_config.get("allocation", "full"),
                   solver=opt_config.get("solver", "cholesky"), rtol=opt_config.get("rtol", 0.0),
                   atol=opt_config.get("atol", 0.0), damping=opt_config.get("damping", 0.0))
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch,
                                                               "fixed": fixed["fixed"]})


def _gauss_newton(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  # The model's non-trained variables travel as the step's `fixed` argument (never closed over).
  tx = gn.gauss_newton(opt_config.learning_rate,
                       apply_fn=lambda p, x, fixed: model.apply({"params": p, **fixed}, x),
                       loss=opt_config.get("loss", "ce_identity"),
                       damping=opt_config.get("damping", 0.0),
                       maxiter=opt_config.get("maxiter", None), tol=opt_config.get("tol", 1e-6))
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch, "fixed": fixed})


def _fishleg(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  tx = optim.fishleg(opt_config.learning_rate, damping=opt_config.get("damping", 0.5),
                     aux_learning_rate=opt_config.get("aux_learning_rate", 1e-4),
                     update_aux_every=opt_config.get("update_aux_every", 10),
                     momentum=opt_config.get("momentum", 0.9),
                     init_scale=opt_config.get("init_scale", 1.0),
                     probe=opt_config.get("probe", "gradient"))
  # fvp_fn linearises when called, i.e. inside FishLeg's aux-step branch: its forward pass then
  # runs on aux steps only (benchmarks/fishleg_step.py measures the difference).
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {
      "fvp_fn": lambda v: fisher_vector_product(model, params, fixed, batch[0])(v), "rng": rng})


OPTIMIZERS: dict[str, Callable[[Any, nn.Module], OptimizerSetup]] = {
    "sgd": _sgd,
    "adam": _adam,
    "exact_gn": _exact_gn,
    "gauss_newton": _gauss_newton,
    "fishleg": _fishleg,
}


def build_optimizer(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  """The optimizer named by ``opt_config.name`` (see :data:`OPTIMIZERS`)."""
  if opt_config.name not in OPTIMIZERS:
    raise ValueError(
        f"Unknown optimizer {opt_config.name!r}; allowed: {', '.join(sorted(OPTIMIZERS))}.")
  return OPTIMIZERS[opt_config.name](opt_config, model)
