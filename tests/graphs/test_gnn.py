"""BipartiteGNN: dense-adjacency reference, relabelling invariance, locality, jit behaviour."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import graphs
from gnrev.data.graph_returns import synthetic_graph_returns

# Customer 3 has no message edge; customer 0 bought variant 1 twice (a multi-edge).
CUSTOMER = np.array([0, 0, 0, 1, 2, 2], np.int32)
VARIANT = np.array([0, 1, 1, 2, 0, 2], np.int32)
NUM_CUSTOMERS, NUM_VARIANTS = 4, 3


def _tiny_graph(dtype=np.float64, seed=0):
  rng = np.random.default_rng(seed)
  return graphs.MessageGraph(
      jnp.asarray(rng.normal(size=(NUM_CUSTOMERS, 3)), dtype),
      jnp.asarray(rng.normal(size=(NUM_VARIANTS, 2)), dtype),
      jnp.asarray(CUSTOMER), jnp.asarray(VARIANT),
      jnp.asarray(rng.normal(size=(CUSTOMER.size, 2)), dtype))


def _init(model, graph, seed=0):
  variables = jax.jit(model.init)(jax.random.key(seed), graph, graph.customer[:2],
                                  graph.variant[:2], graph.event_features[:2])
  # Non-zero biases, so that a wrong bias path shows in the comparisons.
  return jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(seed + 1), x.shape,
                                                            x.dtype), variables)


def _dense_node_embeddings(params, graph, num_rounds):
  """Node states from explicit incidence and adjacency matrices (no gathers or segments)."""
  incidence_c = np.eye(NUM_CUSTOMERS)[CUSTOMER].T  # (customers, edges)
  incidence_v = np.eye(NUM_VARIANTS)[VARIANT].T  # (variants, edges)
  adjacency = incidence_c @ incidence_v.T  # (customers, variants), multi-edges counted
  inv_degree_c = np.diag([1 / d if d else 0.0 for d in incidence_c.sum(1)])
  inv_degree_v = np.diag([1 / d if d else 0.0 for d in incidence_v.sum(1)])
  x_e = np.asarray(graph.event_features)

  def dense(name, x):
    layer = params[name]
    return x @ np.asarray(layer["kernel"]) + np.asarray(layer.get("bias", 0.0))

  relu = lambda x: np.maximum(x, 0)  # noqa: E731
  h_c = relu(dense("customer_embed", np.asarray(graph.customer_features)))
  h_v = relu(dense("variant_embed", np.asarray(graph.variant_features)))
  for r in range(num_rounds):
    to_c = inv_degree_c @ np.concatenate([adjacency @ h_v, incidence_c @ x_e], 1)
    to_v = inv_degree_v @ np.concatenate([adjacency.T @ h_c, incidence_v @ x_e], 1)
    h_c, h_v = (relu(dense(f"customer_self_{r}", h_c) + dense(f"customer_neighbours_{r}", to_c)),
                relu(dense(f"variant_self_{r}", h_v) + dense(f"variant_neighbours_{r}", to_v)))
  return h_c, h_v


@pytest.mark.x64
def test_segment_mean_equals_degree_normalised_incidence_product():
  values = np.random.default_rng(0).normal(size=(CUSTOMER.size, 3))
  incidence = np.eye(NUM_CUSTOMERS)[CUSTOMER].T
  degree = incidence.sum(1, keepdims=True)
  expected = np.where(degree > 0, incidence @ values / np.maximum(degree, 1), 0.0)
  got = graphs.segment_mean(jnp.asarray(values), jnp.asarray(CUSTOMER), NUM_CUSTOMERS)
  np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.x64
@pytest.mark.parametrize("num_rounds", [0, 1, 3])
def test_message_passing_equals_dense_adjacency_computation(num_rounds):
  graph = _tiny_graph()
  model = graphs.BipartiteGNN(hidden_size=5, num_rounds=num_rounds, edge_hidden_sizes=(4,),
                              param_dtype=jnp.float64)
  variables = _init(model, graph)
  h_c, h_v = jax.jit(functools.partial(model.apply, method=model.node_embeddings))(variables,
                                                                                   graph)
  ref_c, ref_v = _dense_node_embeddings(variables["params"], graph, num_rounds)
  assert np.abs(ref_c).max() > 0.1 and np.abs(ref_v).max() > 0.1
  np.testing.assert_allclose(h_c, ref_c, rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(h_v, ref_v, rtol=1e-12, atol=1e-13)

  query = (jnp.array([3, 0, 2]), jnp.array([1, 1, 0]), graph.event_features[:3])
  head = variables["params"]["edge_mlp"]
  edge_inputs = np.concatenate([ref_c[[3, 0, 2]], ref_v[[1, 1, 0]], query[2]], 1)
  hidden = np.maximum(edge_inputs @ head["Dense_0"]["kernel"] + head["Dense_0"]["bias"], 0)
  expected = (hidden @ head["Dense_1"]["kernel"] + head["Dense_1"]["bias"])[:, 0]
  np.testing.assert_allclose(jax.jit(model.apply)(variables, graph, *query), expected, rtol=1e-12)


@pytest.mark.x64
def test_predictions_are_invariant_to_relabelling_nodes_and_reordering_edges():
  data = synthetic_graph_returns(0, num_customers=30, num_variants=12, events_per_customer=3.0)
  graph = graphs.message_graph(data, np.arange(data.num_events - 10))
  query = np.arange(data.num_events - 10, data.num_events)  # held-out events
  model = graphs.BipartiteGNN(hidden_size=6, num_rounds=2, edge_hidden_sizes=(5,),
                              param_dtype=jnp.float64)
  graph = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, graph)
  variables = _init(model, graph)
  x_q = jnp.asarray(data.event_features[query], jnp.float64)
  apply = jax.jit(model.apply)
  logits = apply(variables, graph, data.customer[query], data.variant[query], x_q)

  rng = np.random.default_rng(1)
  new_c = rng.permutation(data.num_customers)  # customer i becomes new_c[i]
  new_v = rng.permutation(data.num_variants)
  edge_order = rng.permutation(graph.customer.size)
  relabelled = graphs.MessageGraph(
      graph.customer_features[np.argsort(new_c)], graph.variant_features[np.argsort(new_v)],
      jnp.asarray(new_c[np.asarray(graph.customer)[edge_order]]),
      jnp.asarray(new_v[np.asarray(graph.variant)[edge_order]]),
      graph.event_features[edge_order])
  relabelled_logits = apply(variables, relabelled, new_c[data.customer[query]],
                                  new_v[data.variant[query]], x_q)
  assert np.std(logits) > 1e-3  # the queries differ, so a mislabelled gather would show
  np.testing.assert_allclose(relabelled_logits, logits, rtol=1e-12, atol=1e-12)


def test_an_edge_sees_its_neighbourhood_only_through_message_rounds():
  graph = _tiny_graph(np.float32)
  # Drop message edge (1, 2): variant 2 keeps a neighbour, customer 1 loses its only one.
  keep = np.arange(CUSTOMER.size) != 3
  pruned = graph._replace(customer=graph.customer[keep], variant=graph.variant[keep],
                          event_features=graph.event_features[keep])
  query = (jnp.array([1, 0]), jnp.array([0, 0]), graph.event_features[:2])
  for num_rounds, changes in ((0, False), (1, True)):
    model = graphs.BipartiteGNN(hidden_size=4, num_rounds=num_rounds, edge_hidden_sizes=(4,))
    variables = _init(model, graph)
    before, after = (jax.jit(model.apply)(variables, g, *query) for g in (graph, pruned))
    assert bool(np.any(np.abs(before - after) > 1e-6)) == changes
    # Edge (0, 0) touches neither endpoint of the dropped edge: one round cannot reach it.
    np.testing.assert_allclose(before[1], after[1], rtol=1e-6)


def test_jitted_step_does_not_retrace_for_a_new_edge_batch():
  data = synthetic_graph_returns(0, num_customers=20, num_variants=8)
  graph = graphs.message_graph(data)
  model = graphs.BipartiteGNN(hidden_size=4, num_rounds=1, edge_hidden_sizes=(4,))
  traces = []

  @jax.jit
  def loss(variables, graph, customer, variant, x_e, labels):
    traces.append(None)
    return graphs.binary_cross_entropy(model.apply(variables, graph, customer, variant, x_e),
                                       labels)

  variables = _init(model, graph)
  for start in (0, 8):
    batch = np.arange(start, start + 8)
    jax.grad(loss)(variables, graph, data.customer[batch], data.variant[batch],
                   data.event_features[batch], data.returned[batch])
  assert len(traces) == 1


@pytest.mark.parametrize("kwargs,match", [({"hidden_size": 0}, "hidden_size"),
                                          ({"num_rounds": -1}, "num_rounds")])
def test_bad_sizes_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    graphs.BipartiteGNN(**kwargs)
