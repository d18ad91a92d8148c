"""The "svd" solver's Gram-based truncated pseudo-inverse against the thin SVD and dense pinv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import gn, nets
from gnrev.curvature import dense_jacobian
from gnrev.gn import sweep
from tests.gn.tiny_revmlp import tiny_problem

# (batch, input size, expansion, activation): dense ReLU features; a linear branch solved on
# Q^T Q (in + 1 < n) and on Q Q^T (in + 1 >= n); a linear branch too wide to factorise.
BRANCHES = [(12, 5, 40, "relu"), (12, 4, 40, "identity"), (4, 8, 40, "identity"),
            (10, 6, 8, "identity")]


def _branch(batch, in_features, expansion, activation, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  # Columns on a 1/k scale give a spread spectrum, as image inputs do.
  scales = 1.0 / jnp.arange(1, in_features + 1, dtype=jnp.float64)
  u = jax.random.normal(keys[0], (batch, in_features), jnp.float64) * scales
  fixed = {"C": jax.random.normal(keys[1], (in_features, expansion), jnp.float64) /
                np.sqrt(expansion)}
  target = jax.random.normal(keys[2], (batch, 3), jnp.float64)
  features = np.asarray(nets.feature_matrix(u, fixed, activation))
  return sweep.branch_features(u, fixed, activation), features, target


def _cut(features, rtol, atol):
  s = np.linalg.svd(features, compute_uv=False)
  return s, max(rtol * s[0], atol, np.finfo(np.float64).eps * max(features.shape) * s[0])


def _omega(solution):
  return np.concatenate([np.asarray(solution.direction["W"]).T,
                         np.asarray(solution.direction["b"])[None]])


@pytest.mark.x64
@pytest.mark.parametrize("shape", BRANCHES)
@pytest.mark.parametrize("rtol,atol", [(0.05, 0.0), (0.2, 1e-3)])
def test_gram_pinv_equals_thin_svd_and_dense_pinv(shape, rtol, atol):
  features, dense, target = _branch(*shape)
  s, cut = _cut(dense, rtol, atol)
  # The claim holds away from the cut; fail loudly if the test data put a value near it.
  assert np.min(np.abs(s / cut - 1)) > 1e-6, "a singular value lies within 1e-6 of the cut"
  solve = lambda solver: sweep.solve_branch(features, target, solver, rtol, atol, 0.0, True)
  gram, thin = solve("svd"), solve("thin_svd")
  assert int(gram.path) == 0  # float64, cut far above the rounding level: the plain Gram
  reference = np.linalg.pinv(dense, rcond=cut / s[0]) @ np.asarray(target)
  for solution in (gram, thin):
    np.testing.assert_allclose(_omega(solution), reference,
                               rtol=0, atol=1e-10 * np.abs(reference).max())
    np.testing.assert_allclose(solution.realised, dense @ reference, rtol=0,
                               atol=1e-10 * np.abs(dense @ reference).max())
    assert int(solution.rank) == int(np.sum(s > cut))
  smallest = s[shape[0] - 1] if len(s) >= shape[0] else 0.0
  np.testing.assert_allclose(gram.min_singular_value, smallest, rtol=1e-8, atol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("shape", [(10, 6, 8, "identity"), (12, 5, 8, "relu")])
def test_cut_below_the_gram_resolution_falls_back_to_the_svd(shape):
  features, dense, target = _branch(*shape)
  # Rank-deficient A (n > M + 1 or > in + 1): the Gram's zero eigenvalues come out at the rounding
  # level, ~ sqrt(eps) s_max > the cut at rtol 1e-9, so the error estimate is O(1): the SVD.
  gram = sweep.solve_branch(features, target, "svd", 1e-9, 0.0, 0.0, False)
  thin = sweep.solve_branch(features, target, "thin_svd", 1e-9, 0.0, 0.0, False)
  assert int(gram.path) == 1
  np.testing.assert_allclose(_omega(gram), _omega(thin), rtol=1e-12, atol=1e-14)


@pytest.mark.x64
@pytest.mark.parametrize("problem,rtol,path", [
    ({}, 0.05, 0),
    ({"batch_size": 12, "linear_first_block": True}, 0.05, 0),
    # n = 10 > M + 1 = 9: a zero singular value, which the Gram puts at its rounding level
    # (then the SVD takes the branch) or clips to zero (then the Gram is exact): some branches.
    ({"batch_size": 10, "expansion": 8}, 0.0, None)])
def test_svd_sweep_equals_thin_svd_sweep_and_reports_the_path(problem, rtol, path):
  model, variables, x, labels, _ = tiny_problem(**problem)
  directions, infos = {}, {}
  for solver in ("svd", "thin_svd"):
    directions[solver], infos[solver] = gn.exact_gn_direction(model, variables, x, labels,
                                                              solver=solver, rtol=rtol)
  np.testing.assert_allclose(ravel_pytree(directions["svd"])[0],
                             ravel_pytree(directions["thin_svd"])[0], rtol=1e-10,
                             atol=1e-10 * float(infos["thin_svd"]["direction_norm"]))
  np.testing.assert_array_equal(infos["svd"]["rank"], infos["thin_svd"]["rank"])
  assert "svd_path" not in infos["thin_svd"]
  if path is None:
    assert np.any(np.asarray(infos["svd"]["svd_path"]) == 1)
  else:
    np.testing.assert_array_equal(infos["svd"]["svd_path"], np.full((3, 2), path))


@pytest.mark.x64
def test_factorised_linear_first_block_is_exact():
  # n = 6 <= in + 1 = 7: the linear block's features have full row rank, Cholesky applies.
  model, variables, x, labels, apply_fn = tiny_problem(batch_size=6, linear_first_block=True)
  for solver in ("cholesky", "svd"):
    direction, info = gn.exact_gn_direction(model, variables, x, labels, loss="mse",
                                            solver=solver, rtol=1e-5)
    target = gn.newton_target("mse", apply_fn(variables["params"], x), labels)
    jacobian, _ = dense_jacobian(apply_fn, variables["params"], x)
    realised = jacobian @ ravel_pytree(direction)[0]
    assert float(jnp.linalg.norm(realised - 3 * target.reshape(-1)) /
                 jnp.linalg.norm(3 * target)) < 1e-10
    assert float(info["residual"]) < 1e-10


def test_float32_gram_step_is_accurate_at_the_papers_truncation():
  # Image-like inputs: scikit-learn digits, strongly correlated pixels; the paper's init.
  from sklearn.datasets import load_digits
  digits = load_digits()
  x = (digits.images[:64].reshape(64, 64) / 16.0 - 0.1307) / 0.3081
  labels = digits.target[:64]
  model = nets.RevMLP(num_blocks=2, expansion=256, num_classes=10, init_std=1e-3)
  variables = model.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
  step = lambda rtol, solver, dtype: gn.exact_gn_direction(
      model, jax.tree.map(lambda a: np.asarray(a, dtype), variables), np.asarray(x, dtype),
      labels, solver=solver, rtol=rtol, atol=1e-5, diagnostics=False)
  # At rtol 1e-2 the estimate eps cond^2 ~ 1.2e-3: the Gram step (1.6e-3 off at n=96, M=512);
  # at 1e-4 the Gram cannot resolve the cut: the SVD, as accurate as float32 allows.
  for rtol, path, tolerance in ((1e-2, 0, 1e-2), (1e-4, 1, 1e-4)):
    direction, info = step(rtol, "svd", np.float32)
    np.testing.assert_array_equal(info["svd_path"], np.full((2, 2), path))
    with jax.enable_x64(True):
      reference = np.asarray(ravel_pytree(step(rtol, "thin_svd", np.float64)[0])[0])
    error = np.linalg.norm(np.asarray(ravel_pytree(direction)[0], np.float64) - reference)
    assert error / np.linalg.norm(reference) < tolerance


@pytest.mark.parametrize("rows,row_blocks", [(300, 2), (300, 4), (100, 4)])
def test_symmetric_gram_is_the_gram(rows, row_blocks):
  matrix = jax.random.normal(jax.random.key(0), (rows, 20))
  gram = sweep.symmetric_gram(matrix, row_blocks)
  np.testing.assert_allclose(gram, matrix @ matrix.T, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(gram, gram.T)
