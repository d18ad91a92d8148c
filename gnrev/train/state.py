"""The train state, the non-finite guard of every task's step, and a run's program."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class BestState:
  """Early stopping: the best parameters so far, their metric and step, and the evaluations
  since (``stale``; the run stops at the patience)."""
  params: Any
  metric: jax.Array   # float32 scalar, in the direction "lower is better"
  step: jax.Array     # int32 scalar
  stale: jax.Array    # int32 scalar


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds, so that a resumed run ends where an uninterrupted one does.

  Attributes:
    step: int32 steps taken.
    rng: key data; step ``s`` uses ``fold_in(rng, s)``.
    epoch_sums: float32 sums over the current epoch, one per the program's ``epoch_sum_names``.
    best: :class:`BestState` with early stopping, else None.
    pruning: :class:`gnrev.train.pruning.PruneState` for a run that prunes, else None.
  """
  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array
  epoch_sums: jax.Array
  best: BestState | None = None
  pruning: Any = None

  @classmethod
  def create(cls, params, opt_state, seed_key: jax.Array, num_sums: int) -> "TrainState":
      return cls(params=params, opt_state=opt_state, step=jnp.int32(0),
               rng=jax.random.key_data(seed_key), epoch_sums=jnp.zeros(num_sums, jnp.float32))


def keep_if_finite(state: TrainState, finite: jax.Array, **new) -> TrainState:
  """``state`` with the fields ``new`` (params, opt_state...) if ``finite``, else unchanged;
  ``step`` advances either way (the next batch is the next one)."""
  kept = {name: jax.tree.map(lambda n, o: jnp.where(finite, n, o), value, getattr(state, name))
          for name, value in new.items()}
  return state.replace(step=state.step + 1, **kept)


class Checked(NamedTuple):
  """What a task's check built, handed to each run's program: the task's ``data``, the
  ``model`` (None without one) and each run's ``OptimizerSetup`` (``optimizers``)."""
  data: Any
  model: Any
  optimizers: dict[str, Any]


class Program(NamedTuple):
  """What the loop runs for one run of a task.

  * ``state``: the initial :class:`TrainState`; ``fixed``: non-trained arrays, an argument of
    every step (never closed over);
  * ``step``: jitted ``(state, fixed, *batch(s)) -> (state, metrics)``, the metrics holding
    ``train_loss`` and ``skipped``; ``batch``: ``step -> arguments`` (1-based, deterministic);
  * ``evaluate``: ``params -> {"test_<name>": float, ...}``;
  * ``epoch_sum_names``: of ``state.epoch_sums``, logged per epoch as ``epoch_<name>``;
    ``postfix``: step metrics shown by the progress bar;
  * ``after_step``: ``(state, step, record) -> (state, record)`` after each step's evaluation
    (and step 0's), before its record and checkpoint are written (pruning), or None.
  """
  state: TrainState
  fixed: Any
  step: Callable
  batch: Callable[[int], tuple]
  evaluate: Callable[[Any], dict]
  steps_per_epoch: int
  epoch_sum_names: tuple[str, ...]
  postfix: tuple[str, ...] = ("train_loss",)
  after_step: Callable[[TrainState, int, dict], tuple[TrainState, dict]] | None = None
