"""Per-epoch parameters from the launcher's checkpoints (max_to_keep=None), and checksums: a
flipped byte anywhere in a step is detected before anything is restored from it."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import train
from gnrev.train import checkpoint

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



def _save_two_steps(directory):
  """Checkpoints of steps 1 and 2 holding different values; returns them."""
  w = jnp.arange(300, dtype=jnp.float32) / 7
  first = {"params": {"w": w}, "step": jnp.int32(1)}
  second = {"params": {"w": w * 3 - 1}, "step": jnp.int32(2)}
  with checkpoint.checkpoint_manager(directory, save_every=1, max_to_keep=None) as manager:
    checkpoint.save(manager, 1, first)
    checkpoint.save(manager, 2, second)
  return first, second


def flip_byte(path, offset):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x01]))


def _files_of(step_dir):
  return sorted(os.path.join(root, name) for root, _, names in os.walk(step_dir)
                for name in names if name != checkpoint.CHECKSUMS)


def test_a_flipped_byte_anywhere_in_a_step_falls_back_to_the_previous_step(tmp_path, caplog):
  saved = str(tmp_path / "saved")
  first, _ = _save_two_steps(saved)
  protected = [path for path in _files_of(os.path.join(saved, "2"))
               if os.path.relpath(path, os.path.join(saved, "2")) in
               json.load(open(os.path.join(saved, "2", checkpoint.CHECKSUMS)))]
  data = max(protected, key=os.path.getsize)  # the array chunk file
  assert os.sep + "d" + os.sep in data
  size = os.path.getsize(data)
  cases = [(data, offset) for offset in np.linspace(0, size - 1, 8).astype(int)]
  cases += [(path, os.path.getsize(path) // 2) for path in protected if path != data]
  checksums = os.path.join(saved, "2", checkpoint.CHECKSUMS)
  cases += [(checksums, offset) for offset in (0, os.path.getsize(checksums) // 2)]
  for case, (path, offset) in enumerate(cases):
    directory = str(tmp_path / f"flipped{case}")
    shutil.copytree(saved, directory)
    flip_byte(os.path.join(directory, os.path.relpath(path, saved)), offset)
    caplog.clear()
    with caplog.at_level("WARNING"):
      with checkpoint.checkpoint_manager(directory, save_every=1, max_to_keep=None) as manager:
        restored = checkpoint.restore_latest(manager, first)
    where = f"{os.path.relpath(path, saved)} at byte {offset}"
    assert "Checkpoint step 2" in caplog.text and "resuming from step 1" in caplog.text, where
    assert checkpoint.CHECKSUMS in caplog.text, where  # the reason: a digest, or its file
    jax.tree.map(np.testing.assert_array_equal, restored, first)
    assert train.checkpoint_steps(directory) == [1], where  # the corrupt step is saved again later


def test_load_params_refuses_a_corrupt_step_and_one_without_checksums(tmp_path):
  directory = str(tmp_path)
  _, second = _save_two_steps(directory)
  np.testing.assert_array_equal(train.load_params(directory, step=2)["w"], second["params"]["w"])
  data = max(_files_of(os.path.join(directory, "2")), key=os.path.getsize)
  flip_byte(data, os.path.getsize(data) // 3)
  with pytest.raises(ValueError, match=r"step 2 .* is corrupt: file .* does not match"):
    train.load_params(directory, step=2)
  os.remove(os.path.join(directory, "1", checkpoint.CHECKSUMS))
  with pytest.raises(ValueError, match=r"step 1 .* is corrupt: checksums.json is missing"):
    train.load_params(directory, step=1)
