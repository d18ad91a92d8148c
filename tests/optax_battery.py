"""Behavioural battery shared by gnrev's optax transforms (optax's own test pattern).

Each ``check_*`` function drives a transform on a tiny problem and fails with an assertion if
the behaviour gnrev's conventions promise (docs/design.md, "Conventions") is broken. A transform's
test module parametrises over them. Extra arguments are produced per step by
``extra_args_fn(loss_fn, params, rng) -> dict`` (e.g. ``{"fvp_fn": ..., "rng": rng}``).

Example:
  >>> extra = lambda loss_fn, params, rng: {"fvp_fn": hvp(loss_fn, params), "rng": rng}
  >>> optax_battery.check_converges(optim.fishleg(0.1), optax_battery.QUADRATIC, extra, 200, 1e-3)
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ExtraArgsFn = Callable[[Callable, Any, jax.Array], dict]


class Problem(NamedTuple):
  name: str
  loss_fn: Callable
  init_params: Any
  minimum: Any


QUADRATIC = Problem(
    "quadratic",
    lambda p: 0.5 * jnp.sum(jnp.array([1.0, 10.0]) * (p["x"] - jnp.array([1.0, -2.0]))**2),
    {"x": jnp.array([-1.0, 1.0])},
    {"x": jnp.array([1.0, -2.0])})

ROSENBROCK = Problem(
    "rosenbrock",
    lambda p: (1.0 - p["x"][0])**2 + 100.0 * (p["x"][1] - p["x"][0]**2)**2,
    {"x": jnp.array([-1.2, 1.0])},
    {"x": jnp.array([1.0, 1.0])})


def no_extra_args(loss_fn, params, rng):
  del loss_fn, params, rng
  return {}


def make_step(tx, loss_fn: Callable, extra_args_fn: ExtraArgsFn, **unknown_args):
  """One un-jitted optimisation step ``(params, state, rng) -> (params, state, loss)``."""

  def step(params, state, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    extra = dict(extra_args_fn(loss_fn, params, rng), **unknown_args)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, loss

  return step


def run(tx, problem: Problem, extra_args_fn: ExtraArgsFn, num_steps: int, seed: int = 0,
        **unknown_args):
  """Runs ``num_steps`` jitted steps from the problem's start; returns ``(params, state, losses)``."""
  step = jax.jit(make_step(tx, problem.loss_fn, extra_args_fn, **unknown_args))
  params, state = problem.init_params, tx.init(problem.init_params)
  losses = []
  for key in jax.random.split(jax.random.key(seed), num_steps):
    params, state, loss = step(params, state, key)
    losses.append(float(loss))
  return params, state, losses


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def check_converges(tx, problem: Problem, extra_args_fn: ExtraArgsFn, num_steps: int,
                    tol: float) -> None:
  """Reaches the problem's minimiser within ``tol`` (max abs error) in ``num_steps``."""
  params, _, _ = run(tx, problem, extra_args_fn, num_steps)
  error = max(float(jnp.max(jnp.abs(p - m)))
              for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(problem.minimum)))
  assert error < tol, f"{problem.name}: distance to the minimum {error:.3g} >= {tol}"


def check_works_in_chain(tx, problem: Problem, extra_args_fn: ExtraArgsFn,
                         num_steps: int = 3) -> None:
  """Inside ``optax.chain`` (with a plain transform after it) it gives the same trajectory."""
  alone, _, _ = run(tx, problem, extra_args_fn, num_steps)
  chained, _, _ = run(optax.chain(tx, optax.scale(1.0)), problem, extra_args_fn, num_steps)
  _assert_trees_close(alone, chained)


def check_works_in_inject_hyperparams(factory: Callable, hyperparams: dict, problem: Problem,
                                      extra_args_fn: ExtraArgsFn, num_steps: int = 3,
                                      static_args: tuple[str, ...] = ()) -> None:
  """``optax.inject_hyperparams(factory)`` runs, exposes the hyperparams and matches the factory.

  ``static_args``: arguments that are not hyperparameters (a model, an apply function, masks).
  """
  injected = optax.inject_hyperparams(factory, static_args=static_args)(**hyperparams)
  params, state, _ = run(injected, problem, extra_args_fn, num_steps)
  reference, _, _ = run(factory(**hyperparams), problem, extra_args_fn, num_steps)
  _assert_trees_close(params, reference, rtol=1e-5, atol=1e-6)
  for name, value in hyperparams.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in static_args:
      np.testing.assert_allclose(state.hyperparams[name], value, rtol=1e-6)


def check_ignores_unknown_extra_args(tx, problem: Problem, extra_args_fn: ExtraArgsFn,
                                     num_steps: int = 3) -> None:
  """Unknown keyword arguments to ``update`` change nothing."""
  plain, _, _ = run(tx, problem, extra_args_fn, num_steps)
  noisy, _, _ = run(tx, problem, extra_args_fn, num_steps, not_an_argument=jnp.ones(3),
                    batch_stats=None)
  _assert_trees_close(plain, noisy, rtol=0, atol=0)


def check_missing_kwarg_raises(tx, problem: Problem, extra_args_fn: ExtraArgsFn,
                               name: str) -> None:
  """Leaving out the required keyword ``name`` is an error that names it (a TypeError, as for
  any missing argument, or a ValueError saying where else it could come from)."""
  without = lambda loss_fn, params, rng: {
      k: v for k, v in extra_args_fn(loss_fn, params, rng).items() if k != name}
  with pytest.raises((TypeError, ValueError), match=name):
    run(tx, problem, without, 1)


def check_no_recompilation(tx, problem: Problem, extra_args_fn: ExtraArgsFn,
                           num_steps: int = 4) -> None:
  """The jitted step traces once: the state keeps its structure, shapes and dtypes."""
  traces = []
  inner = make_step(tx, problem.loss_fn, extra_args_fn)

  def counted(params, state, rng):
    traces.append(1)
    return inner(params, state, rng)

  step = jax.jit(counted)
  params, state = problem.init_params, tx.init(problem.init_params)
  initial = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), state)
  for key in jax.random.split(jax.random.key(0), num_steps):
    params, state, _ = step(params, state, key)
  assert len(traces) == 1, f"traced {len(traces)} times in {num_steps} steps"
  assert jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), state) == initial


def check_state_finite(tx, problem: Problem, extra_args_fn: ExtraArgsFn,
                       num_steps: int = 50) -> None:
  """Every floating leaf of the state is finite after ``num_steps``."""
  _, state, losses = run(tx, problem, extra_args_fn, num_steps)
  assert np.all(np.isfinite(losses))
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      assert bool(jnp.all(jnp.isfinite(leaf))), "non-finite optimizer state"


def check_non_finite_gradient_is_skipped(tx, problem: Problem, extra_args_fn: ExtraArgsFn) -> None:
  """Under ``optax.apply_if_finite`` (optax's guard) a NaN gradient changes no parameter and
  leaves every floating leaf of the state finite, and the next finite step still runs."""
  guarded = optax.apply_if_finite(tx, max_consecutive_errors=2)

  def step(params, state, rng, poison):
    grads = jax.grad(problem.loss_fn)(params)
    grads = jax.tree.map(lambda g: jnp.where(poison, jnp.nan, g), grads)
    updates, state = guarded.update(grads, state, params, **extra_args_fn(problem.loss_fn, params,
                                                                          rng))
    return optax.apply_updates(params, updates), state

  step = jax.jit(step)
  params, state = problem.init_params, guarded.init(problem.init_params)
  poisoned, state = step(params, state, jax.random.key(0), True)
  _assert_trees_close(poisoned, params, rtol=0, atol=0)
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      assert bool(jnp.all(jnp.isfinite(leaf))), "non-finite optimizer state after a NaN gradient"
  moved, _ = step(params, state, jax.random.key(1), False)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(moved))
