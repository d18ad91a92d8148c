"""Optimizers by name: each entry builds an optax transform and the extra step arguments it needs.

A registry entry is a small factory ``make(opt_config, model) -> OptimizerSetup``. The training
step calls ``setup.extra_args(params, fixed, batch, rng)`` inside jit and forwards the result as
keyword arguments to ``tx.update`` (optax's extra-args protocol), so a transform that needs the
batch (Gauss-Newton), the fixed variables (exact GN) or a Fisher-vector product and a key
(FishLeg) gets them, and the others ignore them. Entries for wings that are not installed are
left out, so :data:`OPTIMIZERS` lists exactly what can run.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


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
  """``v -> F v`` for the softmax likelihood, ``F = J^T (diag p - p p^T) J / n`` (= the GGN)."""
  apply_fn = apply_fn_of(model, fixed)

  def fvp(v):
    logits, jv = jax.jvp(lambda p: apply_fn(p, x), (params,), (v,))
    probs = jax.nn.softmax(logits)
    hjv = probs * jv - probs * jnp.sum(probs * jv, axis=-1, keepdims=True)
    return jax.vjp(lambda p: apply_fn(p, x), params)[1](hjv / x.shape[0])[0]

  return fvp


def _exact_gn(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  from gnrev import gn
  tx = gn.exact_gn(opt_config.learning_rate, model=model,
                   loss=opt_config.get("loss", "ce_identity"))
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch,
                                                               "fixed": fixed["fixed"]})


def _gauss_newton(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  from gnrev import gn
  # apply_fn sees the trained params only: models with fixed variables (RevMLP) need them
  # passed through the step's extra arguments once gn.gauss_newton accepts them.
  tx = gn.gauss_newton(opt_config.learning_rate,
                       apply_fn=lambda p, x: model.apply({"params": p}, x),
                       loss=opt_config.get("loss", "ce"), damping=opt_config.get("damping", 0.0))
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {"batch": batch})


def _fishleg(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  from gnrev import optim
  tx = optim.fishleg(opt_config.learning_rate, damping=opt_config.get("damping", 0.5),
                     aux_learning_rate=opt_config.get("aux_learning_rate", 1e-4))
  return OptimizerSetup(tx, lambda params, fixed, batch, rng: {
      "fvp_fn": fisher_vector_product(model, params, fixed, batch[0]), "rng": rng})


def _available(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ImportError:
    return False


OPTIMIZERS: dict[str, Callable[[Any, nn.Module], OptimizerSetup]] = {
    "sgd": _sgd,
    "adam": _adam,
    **({"exact_gn": _exact_gn, "gauss_newton": _gauss_newton} if _available("gnrev.gn") else {}),
    **({"fishleg": _fishleg} if _available("gnrev.optim") else {}),
}


def build_optimizer(opt_config: Any, model: nn.Module) -> OptimizerSetup:
  """The optimizer named by ``opt_config.name`` (see :data:`OPTIMIZERS`)."""
  if opt_config.name not in OPTIMIZERS:
    raise ValueError(
        f"Unknown optimizer {opt_config.name!r}; allowed: {', '.join(sorted(OPTIMIZERS))}.")
  return OPTIMIZERS[opt_config.name](opt_config, model)
