"""The shared optax battery (tests/optax_battery.py) over every optax transform gnrev exports.

One list of entries, ``(factory, kwargs, problem, extra-args builder, required extra argument,
static arguments)``, and one test per behaviour of the battery parametrised over it: each
transform works in ``optax.chain`` and in ``optax.inject_hyperparams``, ignores unknown extra
arguments, names a missing required one, jits once with a state of stable structure and dtypes,
and under ``optax.apply_if_finite`` skips a NaN gradient without a non-finite state.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import pytest

from gnrev import curvature, gn, meta, nets, optim, prune
from tests import optax_battery


class Entry(NamedTuple):
  factory: Callable
  kwargs: dict
  problem: optax_battery.Problem
  extra_args: optax_battery.ExtraArgsFn
  required: str | None = None          # an extra argument the update cannot do without
  static_args: tuple[str, ...] = ()    # arguments inject_hyperparams must not inject


def _hessian_extra_args(loss_fn, params, rng):
  return {"fvp_fn": curvature.hessian_vector_product(loss_fn, params), "rng": rng}


def _revmlp_problem():
  x = jax.random.normal(jax.random.key(0), (4, 8))
  y = jnp.arange(4) % 2
  model = nets.RevMLP(num_blocks=1, expansion=8, num_classes=2)
  variables = model.init(jax.random.key(1), x)
  fixed = variables["fixed"]

  def loss_fn(params):
    logits = model.apply({"params": params, "fixed": fixed}, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

  problem = optax_battery.Problem("revmlp", loss_fn, variables["params"], None)
  return model, problem, lambda loss_fn, params, rng: {"batch": (x, y), "fixed": fixed}


def _regression_problem():
  x = jax.random.normal(jax.random.key(2), (4, 3))
  y = jax.random.normal(jax.random.key(3), (4, 1))
  apply_fn = lambda params, inputs: inputs @ params["w"]
  loss_fn = lambda params: 0.5 * jnp.mean((apply_fn(params, x) - y) ** 2)
  problem = optax_battery.Problem("regression", loss_fn, {"w": jnp.zeros((3, 1))}, None)
  return apply_fn, problem, lambda loss_fn, params, rng: {"batch": (x, y)}


def _tasks_problem():
  """Four tasks' parameters stacked on a leading axis (what TreeMAML's inner steps see)."""
  targets = jnp.arange(8.0).reshape(4, 2)
  return optax_battery.Problem("tasks", lambda p: 0.5 * jnp.sum((p["w"] - targets) ** 2),
                               {"w": jnp.zeros((4, 2))}, targets)


_FISHLEG = dict(damping=1.0, aux_learning_rate=0.05, update_aux_every=2, momentum=0.5)
_MODEL, _REVMLP, _REVMLP_ARGS = _revmlp_problem()
_APPLY, _REGRESSION, _REGRESSION_ARGS = _regression_problem()

ENTRIES: dict[str, Entry] = {
    "optim.fishleg": Entry(optim.fishleg, dict(learning_rate=0.3, **_FISHLEG),
                           optax_battery.QUADRATIC, _hessian_extra_args, "fvp_fn"),
    "optim.scale_by_fishleg": Entry(optim.scale_by_fishleg, _FISHLEG, optax_battery.QUADRATIC,
                                    _hessian_extra_args, "fvp_fn"),
    "gn.exact_gn": Entry(gn.exact_gn, dict(learning_rate=0.1, model=_MODEL, loss="ce_identity"),
                         _REVMLP, _REVMLP_ARGS, "batch", ("model", "loss")),
    "gn.gauss_newton": Entry(gn.gauss_newton, dict(learning_rate=0.5, apply_fn=_APPLY,
                                                   loss="mse", damping=1e-3),
                             _REGRESSION, _REGRESSION_ARGS, "batch", ("apply_fn", "loss")),
    "meta.tree_pool": Entry(meta.tree_pool, dict(labels=None, pool="mean"), _tasks_problem(),
                            lambda loss_fn, params, rng: {"step_labels": jnp.array([0, 0, 1, 1])},
                            "step_labels", ("labels", "pool")),
    "prune.keep_masked": Entry(prune.keep_masked, dict(masks={"x": jnp.array([True, False])}),
                               optax_battery.QUADRATIC, optax_battery.no_extra_args, None,
                               ("masks",)),
}
NAMES = sorted(ENTRIES)


def _transform(entry: Entry) -> Any:
  return entry.factory(**entry.kwargs)


# Each behaviour of the battery, as a check of one entry.
BEHAVIOURS: dict[str, Callable[[Entry], None]] = {
    "works_in_optax_chain": lambda e: optax_battery.check_works_in_chain(
        _transform(e), e.problem, e.extra_args),
    "works_in_inject_hyperparams": lambda e: optax_battery.check_works_in_inject_hyperparams(
        e.factory, e.kwargs, e.problem, e.extra_args, static_args=e.static_args),
    "ignores_unknown_extra_args": lambda e: optax_battery.check_ignores_unknown_extra_args(
        _transform(e), e.problem, e.extra_args),
    "jits_once_with_a_state_of_stable_structure_and_dtypes":
        lambda e: optax_battery.check_no_recompilation(_transform(e), e.problem, e.extra_args),
    "skips_a_non_finite_gradient_with_a_finite_state":
        lambda e: optax_battery.check_non_finite_gradient_is_skipped(_transform(e), e.problem,
                                                                     e.extra_args),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_every_transform_has_the_shared_behaviour(behaviour, name):
  BEHAVIOURS[behaviour](ENTRIES[name])


@pytest.mark.parametrize("name", [n for n in NAMES if ENTRIES[n].required])
def test_a_missing_required_extra_argument_is_named(name):
  entry = ENTRIES[name]
  optax_battery.check_missing_kwarg_raises(_transform(entry), entry.problem, entry.extra_args,
                                           entry.required)
