"""Clustering task gradients recovers the generator's tree at high signal-to-noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from gnrev import meta


def linear_loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] - y) ** 2)


def level_aris(num_support, method, seed=0):
  gen = meta.HierarchicalRegression("linear", branching=(4, 4, 4), level_stds=(1.0, 0.4, 0.05),
                                    dim=32, noise_std=0.01, num_support=num_support)
  support, _, labels = gen.sample(jax.random.key(seed))
  grads = jax.vmap(jax.grad(linear_loss), in_axes=(None, 0))({"w": jnp.zeros(32)}, support)
  learned = meta.cluster_tasks(grads, depth=2, num_steps=3, method=method,
                               thresholds=(0.6, 0.93))
  return [adjusted_rand_score(labels[k], learned[k]) for k in range(3)]


@pytest.mark.parametrize("method", ["otd", "average", "threshold"])
def test_clustering_recovers_the_tree_at_high_snr_and_degrades_with_noise(method):
  high = level_aris(2000, method)
  assert min(high) >= 0.9, high
  low = level_aris(10, method)
  assert max(low[:2]) < 0.5, low
  assert high[2] == low[2] == 1.0  # the padded leaf level is singletons, as in the true tree


def test_average_linkage_does_not_chain_two_groups_through_one_similar_pair():
  # Two groups of 4 tasks (similarity 0.9 inside, 0 across) plus one cross pair at 0.8: single
  # linkage at 0.5 merges everything through that pair, average linkage keeps the groups.
  similarity = np.kron(np.eye(2), np.full((4, 4), 0.9))
  np.fill_diagonal(similarity, 1.0)
  similarity[3, 4] = similarity[4, 3] = 0.8
  single = meta.threshold_labels(jnp.asarray(similarity), (0.5,))[0]
  average = meta.average_linkage_labels(similarity, (0.5,))[0]
  assert len(set(single.tolist())) == 1
  assert average.tolist() == [0, 0, 0, 0, 4, 4, 4, 4]


@pytest.mark.parametrize("method", ["average", "threshold"])
def test_threshold_cuts_are_jittable_and_nested(method):
  grads = jax.random.normal(jax.random.key(1), (12, 5))
  labels = jax.jit(lambda g: meta.cluster_tasks(g, depth=3, method=method,
                                                thresholds=(0.2, 0.5, 0.8)))(grads)
  assert 1 < len(set(np.asarray(labels[1]).tolist())) < 12  # a non-trivial middle level
  for k in range(2):
    fine, coarse = np.asarray(labels[k + 1]), np.asarray(labels[k])
    assert np.all(coarse[:, None] == coarse[None, :], where=fine[:, None] == fine[None, :])


def test_nest_labels_intersects_partitions():
  nested = meta.nest_labels(jnp.array([0, 0, 0, 3]), jnp.array([1, 1, 3, 3]))
  assert nested.tolist() == [0, 0, 2, 3]


def test_bad_clustering_arguments_raise():
  grads = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="method"):
    meta.cluster_tasks(grads, 2, method="kmeans")
  with pytest.raises(ValueError, match="increasing"):
    meta.cluster_tasks(grads, 2, method="threshold", thresholds=(0.5, 0.2))
  with pytest.raises(ValueError, match="num_steps"):
    meta.cluster_tasks(grads, 3, num_steps=2)


def test_generator_labels_match_its_subtrees():
  gen = meta.HierarchicalRegression("sinusoid", branching=(2, 3), level_stds=(1.0, 0.5))
  support, query, labels = gen.sample(jax.random.key(0))
  assert support[0].shape == (6, 5, 1) and query[1].shape == (6, 10)
  assert labels.tolist() == [[0, 0, 0, 3, 3, 3], [0, 1, 2, 3, 4, 5]]
  flat = meta.HierarchicalRegression("linear", level_stds=(1.0, 0.5, 0.25), hierarchical=False)
  assert flat.level_stds[:2] == (0.0, 0.0)
  np.testing.assert_allclose(flat.level_stds[2] ** 2, 1.0 + 0.25 + 0.0625)
  with pytest.raises(ValueError, match="kind"):
    meta.HierarchicalRegression("cubic")
  with pytest.raises(ValueError, match="level_stds"):
    meta.HierarchicalRegression(branching=(2, 2), level_stds=(1.0,))


def _threshold_labels_by_squaring(similarity, thresholds):
  """The previous implementation (the reference): ``ceil(log2 n)`` boolean matrix squarings."""
  num_tasks = similarity.shape[0]
  eye = np.eye(num_tasks, dtype=bool)
  rows = []
  for tau in thresholds:
    reach = (similarity >= tau) | eye
    for _ in range(max(1, int(np.ceil(np.log2(max(num_tasks, 2)))))):
      reach = (reach.astype(np.float64) @ reach.astype(np.float64)) > 0
    rows.append(np.argmax(reach, axis=1))
  return np.stack(rows).astype(np.int32)


@pytest.mark.x64
def test_threshold_labels_equal_the_matrix_squaring_reference():
  rng = np.random.default_rng(0)
  cut = jax.jit(meta.threshold_labels, static_argnums=1)
  for trial in range(24):
    num_tasks = int(rng.integers(1, 40))
    similarity = rng.uniform(-1, 1, (num_tasks, num_tasks))
    if trial % 3 == 0:
      similarity = 0.5 * (similarity + similarity.T)
    if trial % 3 == 1:  # a long chain: i ~ i + 1 only, the worst case for propagation
      similarity = np.eye(num_tasks, k=1) + np.eye(num_tasks, k=-1) - 0.5
    thresholds = tuple(np.sort(rng.uniform(-0.2, 1.0, 3)).tolist())
    expected = _threshold_labels_by_squaring(similarity, thresholds)
    np.testing.assert_array_equal(cut(jnp.asarray(similarity), thresholds), expected)


def test_adjusted_rand_indices_compare_steps_beyond_the_tree_with_the_leaves():
  true = meta.tree_labels((2, 2))[None]                           # (1 batch, D=2, 4 tasks)
  used = np.concatenate([true, np.arange(4)[None, None]], axis=1)  # K=3: the leaves last
  np.testing.assert_allclose(meta.adjusted_rand_indices(true, used), [[1.0, 1.0, 1.0]])
  merged = np.zeros_like(used)                                    # one cluster at every step
  assert np.all(meta.adjusted_rand_indices(true, merged) < 1.0)
