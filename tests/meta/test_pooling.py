"""Pooling over a task tree with a non-finite task gradient: it is left out and counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnrev import meta

LABELS = np.array([0, 0, 0, 3, 3, 5], np.int32)  # clusters {0, 1, 2}, {3, 4}, {5}


def grads_with_nan_in_task(task, rng):
  grads = {"w": rng.normal(size=(6, 3, 2)), "b": rng.normal(size=(6, 2))}
  grads["b"][task, 1] = np.nan
  return grads


def dense_pool(grads, labels, finite, pool):
  """Each task's cluster pool over its finite members, one task at a time."""
  out = {}
  for name, g in grads.items():
    rows = []
    for i in range(len(labels)):
      members = [j for j in range(len(labels)) if labels[j] == labels[i] and finite[j]]
      total = sum((g[j] for j in members), np.zeros_like(g[i]))
      rows.append(total / max(len(members), 1) if pool == "mean" else total)
    out[name] = np.stack(rows)
  return out


@pytest.mark.x64
@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_a_nan_task_gradient_is_left_out_of_its_clusters_pool(pool):
  grads = grads_with_nan_in_task(1, np.random.default_rng(0))
  pooled = meta.pool_by_labels(jax.tree.map(jnp.asarray, grads), jnp.asarray(LABELS), pool)
  finite = [True, False, True, True, True, True]
  expected = dense_pool(grads, LABELS, finite, pool)
  for name in grads:
    assert pooled[name].dtype == jnp.float64
    assert np.all(np.isfinite(pooled[name]))
    np.testing.assert_allclose(pooled[name], expected[name], rtol=1e-12, atol=0)
  # The other clusters are pooled exactly as without the NaN.
  clean = meta.pool_by_labels({k: jnp.asarray(np.nan_to_num(v)) for k, v in grads.items()},
                              jnp.asarray(LABELS), pool)
  for name in grads:
    np.testing.assert_array_equal(pooled[name][3:], clean[name][3:])


@pytest.mark.x64
def test_a_cluster_without_a_finite_member_pools_to_zero():
  grads = grads_with_nan_in_task(5, np.random.default_rng(1))  # task 5 is alone in its cluster
  pooled = meta.pool_by_labels(jax.tree.map(jnp.asarray, grads), jnp.asarray(LABELS))
  for name in grads:
    np.testing.assert_array_equal(pooled[name][5], np.zeros_like(grads[name][5]))


def test_tree_pool_counts_the_task_gradients_it_left_out():
  schedule = jnp.asarray(np.stack([LABELS, np.arange(6, dtype=np.int32)]))
  tx = optax.chain(meta.tree_pool(schedule), optax.scale(-0.1))
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads_with_nan_in_task(1, rng))
  grads["w"] = grads["w"].at[4, 0, 0].set(jnp.inf)
  state = tx.init(grads)
  update = jax.jit(tx.update)
  updates, state = update(grads, state)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  assert int(state[0].num_nonfinite) == 2 and state[0].num_nonfinite.dtype == jnp.int32
  updates, state = update(jax.tree.map(jnp.nan_to_num, grads), state)  # all finite
  assert int(state[0].num_nonfinite) == 2 and int(state[0].step) == 2
