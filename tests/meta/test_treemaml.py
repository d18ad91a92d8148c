"""TreeMAML's inner loop and meta-gradients against MAML, shared updates and dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gnrev import meta

NUM_TASKS, DIM, SHOTS = 6, 3, 4
NESTED = jnp.array([[0, 0, 0, 3, 3, 3], [0, 0, 2, 3, 3, 5], [0, 1, 2, 3, 4, 5]], jnp.int32)
LRS = (0.3, 0.2, 0.1)


def mlp_loss(params, batch):
  x, y = batch
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  return jnp.mean((hidden @ params["w2"] - y) ** 2)


def linear_loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] - y) ** 2)


def tasks(key, dtype=jnp.float32):
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  support = (jax.random.normal(k1, (NUM_TASKS, SHOTS, DIM), dtype),
             jax.random.normal(k2, (NUM_TASKS, SHOTS), dtype))
  query = (jax.random.normal(k3, (NUM_TASKS, SHOTS, DIM), dtype),
           jax.random.normal(k4, (NUM_TASKS, SHOTS), dtype))
  theta = {"w1": 0.5 * jax.random.normal(k5, (DIM, 4), dtype), "b1": jnp.zeros(4, dtype),
           "w2": jnp.ones(4, dtype)}
  return theta, support, query


def maml_reference(theta, support, lrs):
  """Plain per-task MAML, one task at a time."""
  adapted = []
  for i in range(NUM_TASKS):
    phi = theta
    batch = jax.tree.map(lambda a: a[i], support)
    for alpha in lrs:
      phi = jax.tree.map(lambda p, g: p - alpha * g, phi, jax.grad(mlp_loss)(phi, batch))
    adapted.append(phi)
  return jax.tree.map(lambda *ps: jnp.stack(ps), *adapted)


def node_reference(theta, support, labels, lrs):
  """One parameter copy per tree node: each node takes a step on its tasks' mean support loss."""
  params = {i: theta for i in range(NUM_TASKS)}
  for k, alpha in enumerate(lrs):
    new = {}
    for node in set(np.asarray(labels[k]).tolist()):
      members = [i for i in range(NUM_TASKS) if int(labels[k, i]) == node]
      phi = params[members[0]]
      mean_loss = lambda p: jnp.mean(jnp.stack(
          [mlp_loss(p, jax.tree.map(lambda a: a[j], support)) for j in members]))
      stepped = jax.tree.map(lambda p, g: p - alpha * g, phi, jax.grad(mean_loss)(phi))
      new.update({j: stepped for j in members})
    params = new
  return jax.tree.map(lambda *ps: jnp.stack(ps), *[params[i] for i in range(NUM_TASKS)])


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


@pytest.mark.x64
def test_singleton_labels_give_exactly_maml():
  theta, support, _ = tasks(jax.random.key(0), jnp.float64)
  learner = meta.TreeMAML(mlp_loss, LRS)
  adapted = learner.adapt(theta, support, meta.singleton_labels(3, NUM_TASKS))
  assert_trees_close(adapted, maml_reference(theta, support, LRS), rtol=1e-12, atol=1e-12)


@pytest.mark.x64
def test_one_cluster_gives_the_shared_update_for_all_tasks():
  theta, support, _ = tasks(jax.random.key(1), jnp.float64)
  adapted = meta.TreeMAML(mlp_loss, LRS).adapt(theta, support, jnp.zeros((3, NUM_TASKS), jnp.int32))
  pooled_loss = lambda p: jnp.mean(jax.vmap(mlp_loss, in_axes=(None, 0))(p, support))
  phi = theta
  for alpha in LRS:
    phi = jax.tree.map(lambda p, g: p - alpha * g, phi, jax.grad(pooled_loss)(phi))
  assert_trees_close(adapted, jax.tree.map(lambda p: jnp.broadcast_to(p, (NUM_TASKS,) + p.shape),
                                           phi), rtol=1e-12, atol=1e-12)


@pytest.mark.x64
def test_per_task_form_equals_one_copy_per_node_on_a_nested_tree():
  theta, support, _ = tasks(jax.random.key(2), jnp.float64)
  adapted = meta.TreeMAML(mlp_loss, LRS).adapt(theta, support, NESTED)
  assert_trees_close(adapted, node_reference(theta, support, NESTED, LRS), rtol=1e-12, atol=1e-12)


@pytest.mark.x64
def test_second_order_meta_gradient_matches_finite_differences():
  key_w, key_data = jax.random.split(jax.random.key(3))
  _, support, query = tasks(key_data, jnp.float64)
  theta = {"w": jax.random.normal(key_w, (DIM,), jnp.float64)}
  learner = meta.TreeMAML(linear_loss, LRS)
  meta_loss = lambda t: learner.meta_loss(t, support, query, NESTED)
  grad = jax.grad(meta_loss)(theta)["w"]
  eps = 1e-6
  basis = np.eye(DIM)
  fd = [(meta_loss({"w": theta["w"] + eps * e}) - meta_loss({"w": theta["w"] - eps * e})) / (2 * eps)
        for e in basis]
  np.testing.assert_allclose(grad, np.array(fd), rtol=1e-7, atol=1e-9)
  # Pooling couples tasks: the exact gradient differs from the first-order one here.
  fo = jax.grad(lambda t: meta.TreeMAML(linear_loss, LRS, first_order=True).meta_loss(
      t, support, query, NESTED))(theta)["w"]
  assert np.abs(fo - grad).max() > 1e-4


@pytest.mark.x64
def test_first_order_meta_gradient_is_mean_query_gradient_at_adapted_params():
  theta, support, query = tasks(jax.random.key(4), jnp.float64)
  learner = meta.TreeMAML(mlp_loss, LRS, first_order=True)
  grad = jax.grad(learner.meta_loss)(theta, support, query, NESTED)
  adapted = learner.adapt(theta, support, NESTED)
  expected = jax.tree.map(lambda g: g.mean(0), jax.vmap(jax.grad(mlp_loss))(adapted, query))
  assert_trees_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_tree_pool_chain_reproduces_the_inner_loop():
  theta, support, _ = tasks(jax.random.key(5))
  inner = optax.chain(meta.tree_pool(NESTED), optax.scale(-0.1))
  phi = jax.tree.map(lambda p: jnp.broadcast_to(p, (NUM_TASKS,) + p.shape), theta)
  state = inner.init(phi)
  for _ in range(3):
    updates, state = inner.update(jax.vmap(jax.grad(mlp_loss))(phi, support), state, phi,
                                  unknown_extra=1)
    phi = optax.apply_updates(phi, updates)
  assert_trees_close(phi, meta.TreeMAML(mlp_loss, (0.1,) * 3).adapt(theta, support, NESTED),
                     rtol=1e-5, atol=1e-6)


def test_meta_step_lowers_meta_loss_and_does_not_recompile():
  theta, support, query = tasks(jax.random.key(6))
  learner = meta.TreeMAML(mlp_loss, (0.05,) * 3)
  optimizer = optax.adam(1e-2)
  step = jax.jit(learner.make_meta_step(optimizer))
  opt_state = optimizer.init(theta)
  first = learner.meta_loss(theta, support, query, NESTED)
  for labels in (NESTED, meta.singleton_labels(3, NUM_TASKS), NESTED):
    theta, opt_state, _ = step(theta, opt_state, support, query, labels)
  assert step._cache_size() == 1
  assert learner.meta_loss(theta, support, query, NESTED) < first


def test_learned_tree_inside_jit_clusters_every_step_and_can_enforce_nesting():
  theta, support, query = tasks(jax.random.key(7))
  cluster = lambda g: meta.cluster_tasks(g, depth=2, num_steps=3, method="otd")
  for nesting in (False, True):
    learner = meta.TreeMAML(mlp_loss, LRS, cluster_fn=cluster, enforce_nesting=nesting)
    _, used = jax.jit(learner.adaptation_path)(theta, support)
    assert used.shape == (3, NUM_TASKS)
    if nesting:
      for k in range(2):  # same cluster at step k+1 implies same cluster at step k
        fine, coarse = np.asarray(used[k + 1]), np.asarray(used[k])
        same = fine[:, None] == fine[None, :]
        assert np.all(coarse[:, None] == coarse[None, :], where=same)
  once = meta.TreeMAML(mlp_loss, LRS, cluster_fn=cluster, recluster="once")
  assert np.isfinite(jax.jit(jax.grad(once.meta_loss))(theta, support, query)["w1"]).all()


@pytest.mark.parametrize("labels, match", [
    (jnp.zeros((2, NUM_TASKS), jnp.int32), "shape"),
    (jnp.zeros((3, NUM_TASKS + 1), jnp.int32), "shape"),
    (jnp.full((3, NUM_TASKS), NUM_TASKS, jnp.int32), "range"),
    (jnp.full((3, NUM_TASKS), -1, jnp.int32), "range"),
])
def test_bad_labels_raise_clear_errors(labels, match):
  theta, support, _ = tasks(jax.random.key(8))
  with pytest.raises(ValueError, match=match):
    meta.TreeMAML(mlp_loss, LRS).adapt(theta, support, labels)


def test_float_labels_and_mismatched_task_axes_raise():
  theta, support, query = tasks(jax.random.key(9))
  learner = meta.TreeMAML(mlp_loss, LRS)
  with pytest.raises(TypeError, match="integer"):
    learner.adapt(theta, support, NESTED.astype(jnp.float32))
  with pytest.raises(ValueError, match="same leading task axis"):
    learner.adapt(theta, (support[0], support[1][:-1]), NESTED)
  with pytest.raises(ValueError, match="same leading task axis"):
    learner.meta_loss(theta, support, jax.tree.map(lambda a: a[:-1], query), NESTED)
  with pytest.raises(ValueError, match="cluster_fn"):
    learner.adapt(theta, support)
  with pytest.raises(ValueError, match="pool"):
    meta.TreeMAML(mlp_loss, LRS, pool="max")
