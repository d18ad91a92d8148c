"""The regression learners of gnrev/meta/tasks.py against a plain numpy forward pass."""

import jax
import numpy as np
import pytest

from gnrev import meta


@pytest.mark.x64
def test_linear_and_mlp_losses_equal_numpy_and_init_has_the_documented_shapes():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(5, 3)), rng.normal(size=5)
  linear = meta.init_regression_params("linear", 3, (), jax.random.key(0))
  assert linear["w"].shape == (3,) and float(meta.linear_loss(linear, (x, y))) == pytest.approx(
      np.mean(y ** 2))
  linear = {"w": rng.normal(size=3), "b": 0.5}
  np.testing.assert_allclose(meta.linear_loss(linear, (x, y)),
                             np.mean((x @ linear["w"] + 0.5 - y) ** 2), rtol=1e-12)
  mlp = meta.init_regression_params("mlp", 1, (4, 2), jax.random.key(1))
  assert [layer["w"].shape for layer in mlp["hidden"]] == [(1, 4), (4, 2)]
  x1 = rng.normal(size=(5, 1))
  h = x1
  for layer in mlp["hidden"]:
    h = np.maximum(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]), 0.0)
  expected = np.mean((h @ np.asarray(mlp["out"]["w"]) + float(mlp["out"]["b"]) - y) ** 2)
  np.testing.assert_allclose(meta.mlp_loss(mlp, (x1, y)), expected, rtol=1e-12)
