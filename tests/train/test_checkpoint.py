"""Per-epoch parameters from the launcher's checkpoints (max_to_keep=None)."""

import os

import jax
import numpy as np
import pytest

from gnrev import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_epoch_is_kept_and_loads_the_params_of_that_step(tmp_path):
  config = train.load_config(os.path.join(REPO, "configs", "default.py"), "smoke")
  config.optimizers = {"sgd": {"name": "sgd", "learning_rate": 0.1}}
  config.num_epochs, config.checkpoint_every, config.max_to_keep = 3, 0, None  # 0: per epoch
  final = train.train_and_evaluate(config, str(tmp_path))["sgd"]["params"]
  directory = os.path.join(tmp_path, "sgd", "checkpoints")
  steps = train.checkpoint_steps(directory)
  assert {4, 8, 12} <= set(steps)  # 4 steps per epoch
  # A run's directory (what a user passes) names the same checkpoints.
  assert train.checkpoint_steps(os.path.join(tmp_path, "sgd")) == steps
  for a, b in zip(*map(jax.tree.leaves, (train.load_params(os.path.join(tmp_path, "sgd"), step=8),
                                         train.load_params(directory, step=8)))):
    np.testing.assert_array_equal(a, b)
  latest, by_step = train.load_params(directory), train.load_params(directory, step=12)
  for a, b, c in zip(*map(jax.tree.leaves, (latest, by_step, final))):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.asarray(c))
  earlier = jax.tree.leaves(train.load_params(directory, step=4))
  assert any(not np.array_equal(a, b) for a, b in zip(earlier, jax.tree.leaves(latest)))
  with pytest.raises(ValueError, match="kept steps"):
    train.load_params(directory, step=5)

