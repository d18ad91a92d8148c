"""The typed train state, the one non-finite guard of every step, and a run's program.

Every task's train step (supervised or meta-learning) returns a new :class:`TrainState` through
:func:`keep_if_finite`, so a step whose update or loss is not finite leaves the parameters and
the optimizer state as they were, for every optimizer alike.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class BestState:
  """Early stopping: the parameters of the best validation metric so far and its step.

  ``stale`` counts the evaluations since the last improvement; the run stops when it reaches
  the patience.
  """
  params: Any
  metric: jax.Array   # float32 scalar, in the direction "lower is better"
  step: jax.Array     # int32 scalar
  stale: jax.Array    # int32 scalar


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds, so that a resumed run ends where an uninterrupted one does.

  Attributes:
    params: the trained parameters.
    opt_state: the optimizer's state.
    step: int32 number of steps taken.
    rng: key data (``jax.random.key_data``); step ``s`` uses ``fold_in(rng, s)``.
    epoch_sums: float32 running sums over the current epoch, one per name of the program's
      ``epoch_sum_names``.
    best: :class:`BestState` with early stopping, else None.
    pruning: :class:`gnrev.train.pruning.PruneState` (masks, FishLeg Surgeon's Q) for a run
      that prunes, else None.
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
    """A state at step 0 with zero epoch sums; ``seed_key`` a typed jax key."""
    return cls(params=params, opt_state=opt_state, step=jnp.int32(0),
               rng=jax.random.key_data(seed_key), epoch_sums=jnp.zeros(num_sums, jnp.float32))


def keep_if_finite(state: TrainState, finite: jax.Array, **new) -> TrainState:
  """``state`` with the fields ``new`` (e.g. params, opt_state) if ``finite``, else as it was.

  The one guard of every train step: a non-finite step is skipped whole (no optimizer's state is
  advanced by it), whatever the transform. ``step`` advances either way, so the next batch is
  the next one.
  """
  kept = {name: jax.tree.map(lambda n, o: jnp.where(finite, n, o), value, getattr(state, name))
          for name, value in new.items()}
  return state.replace(step=state.step + 1, **kept)


class Checked(NamedTuple):
  """What a task's start-up check built, handed to each run's program so nothing is built twice.

  Attributes:
    data: the task's data (what its ``load`` returned).
    model: the model the check built on the data's shapes (None when the task has none).
    optimizers: ``{run: OptimizerSetup}``, each run's optimizer, its factory called once.
  """
  data: Any
  model: Any
  optimizers: dict[str, Any]


class Program(NamedTuple):
  """What the trainer's loop runs for one run of a task.

  Its fields (autodoc lists them by name below):

  * ``state``: the initial :class:`TrainState` (replicated over the mesh);
  * ``fixed``: non-trained arrays passed to every step as an argument (never closed over);
  * ``step``: jitted ``(state, fixed, *batch) -> (state, {metric: scalar})``; the metrics hold
    ``train_loss`` and ``skipped``;
  * ``batch``: ``step -> batch`` arguments of step ``step`` (1-based), deterministic in the step;
  * ``evaluate``: ``params -> {"test_<name>": float, "val_<name>": float, ...}``;
  * ``steps_per_epoch``: steps of one epoch (epoch sums and the default evaluation period);
  * ``epoch_sum_names``: names of ``state.epoch_sums``, logged as ``epoch_<name>`` per epoch;
  * ``postfix``: step metrics shown next to the progress bar;
  * ``after_step``: ``(state, step, record) -> (state, record)`` run after step ``step``'s
    evaluation (and after the initial one, step 0), before its record is written and its
    checkpoint saved; e.g. pruning (:meth:`gnrev.train.pruning.PruningHook.after_step`). None: nothing.
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
