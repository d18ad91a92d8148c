"""Message passing on the customer-variant bipartite graph, for edge (purchase) classification.

The graph the messages travel on is a :class:`MessageGraph`: node features and a set of
message edges with their event features but *no labels*. Keeping labels out of the messages
is how an edge's own return label is kept out of its prediction: with label messages, every
training edge would see its label through its endpoints' aggregates unless each query edge
were removed from its own neighbourhood. Without them any edge set may carry messages; the
transductive choice is all events (a purchase and its features are known before its return
is), which also gives training and held-out edges the same neighbourhoods.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gnrev.data.graph_returns import GraphReturns
from gnrev.graphs.tabular import MLPClassifier


class MessageGraph(NamedTuple):
  """Node features and the (unlabelled) edges that carry messages."""
  customer_features: jax.Array  # (num_customers, customer_dim) float
  variant_features: jax.Array  # (num_variants, variant_dim) float
  customer: jax.Array  # (num_messages,) int32, customer end of each message edge
  variant: jax.Array  # (num_messages,) int32, variant end of each message edge
  event_features: jax.Array  # (num_messages, event_dim) float


def message_graph(data: GraphReturns, events: Optional[np.ndarray] = None) -> MessageGraph:
  """The :class:`MessageGraph` of ``data`` over the given events (default: all), labels dropped.

  Args:
    data: the purchase graph.
    events: indices of the events that carry messages, or ``None`` for every event.

  Returns:
    A :class:`MessageGraph` of jax arrays.
  """
  events = np.arange(data.num_events) if events is None else np.asarray(events)
  return MessageGraph(jnp.asarray(data.customer_features), jnp.asarray(data.variant_features),
                      jnp.asarray(data.customer[events]), jnp.asarray(data.variant[events]),
                      jnp.asarray(data.event_features[events]))


def segment_mean(values: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
  """Mean of the rows of ``values`` per segment; segments without rows get zeros.

  Args:
    values: ``(n, d)`` rows to aggregate.
    segment_ids: ``(n,)`` int segment of each row, in ``[0, num_segments)``.
    num_segments: number of segments (static).

  Returns:
    ``(num_segments, d)`` means.
  """
  total = jax.ops.segment_sum(values, segment_ids, num_segments)
  count = jax.ops.segment_sum(jnp.ones_like(segment_ids, values.dtype), segment_ids,
                              num_segments)
  return total / jnp.maximum(count, 1)[:, None]


class BipartiteGNN(nn.Module):
  """Mean-aggregation message-passing network for edges of a customer-variant graph.

  Node states start as ``h = relu(Dense(x))`` of each side's features. Each of ``num_rounds``
  rounds updates both sides at once from the previous states:

  .. math::
    h_c \\leftarrow \\mathrm{relu}\\big(W_c h_c + U_c\\, \\mathrm{mean}_{e=(c,v)} [h_v, x_e]\\big),
    \\qquad
    h_v \\leftarrow \\mathrm{relu}\\big(W_v h_v + U_v\\, \\mathrm{mean}_{e=(c,v)} [h_c, x_e]\\big),

  the means running over the message edges at the node (``x_e``: event features; a node
  without message edges aggregates zeros). An :class:`~gnrev.graphs.MLPClassifier` on
  ``[h_c, h_v, x_e]`` of a queried edge gives its logit. Node states are computed once per
  call for the whole graph and gathered for the batch of queried edges, so a call costs one
  pass over the message edges plus the batch. Node and edge order do not matter (permutation equivariance).

  Attributes:
    hidden_size: width of the node states.
    num_rounds: number of message-passing rounds (0: node embeddings of the own features only).
    edge_hidden_sizes: hidden widths of the edge MLP.
    param_dtype: dtype of the parameters.

  Example:
    >>> from gnrev.data import graph_returns
    >>> data = graph_returns.synthetic_graph_returns(0, num_customers=20, num_variants=10)
    >>> graph = message_graph(data)                      # all events, no labels
    >>> queried = jnp.arange(5)                          # a batch of 5 queried events
    >>> c, v = data.customer[queried], data.variant[queried]
    >>> x_e = data.event_features[queried]
    >>> model = BipartiteGNN(hidden_size=8, num_rounds=2)
    >>> params = model.init(jax.random.key(0), graph, c, v, x_e)
    >>> model.apply(params, graph, c, v, x_e).shape
    (5,)
  """
  hidden_size: int = 32
  num_rounds: int = 2
  edge_hidden_sizes: Sequence[int] = (64,)
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
      raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}.")
    if not isinstance(self.num_rounds, int) or self.num_rounds < 0:
      raise ValueError(f"num_rounds must be an int >= 0, got {self.num_rounds!r}.")
    super().__post_init__()

  def setup(self):
    def dense(use_bias=True):
      return nn.Dense(self.hidden_size, use_bias=use_bias, param_dtype=self.param_dtype)

    rounds = range(self.num_rounds)
    self.customer_embed, self.variant_embed = dense(), dense()
    # The neighbour maps have no bias: the self maps' biases already shift the sum.
    self.customer_self = [dense() for _ in rounds]
    self.customer_neighbours = [dense(use_bias=False) for _ in rounds]
    self.variant_self = [dense() for _ in rounds]
    self.variant_neighbours = [dense(use_bias=False) for _ in rounds]
    self.edge_mlp = MLPClassifier(self.edge_hidden_sizes, self.param_dtype)

  def node_embeddings(self, graph: MessageGraph) -> tuple[jax.Array, jax.Array]:
    """Customer and variant states ``(num_customers, hidden)``, ``(num_variants, hidden)``."""
    num_customers = graph.customer_features.shape[0]
    num_variants = graph.variant_features.shape[0]
    h_c = nn.relu(self.customer_embed(graph.customer_features))
    h_v = nn.relu(self.variant_embed(graph.variant_features))
    for r in range(self.num_rounds):
      to_customer = segment_mean(jnp.concatenate([h_v[graph.variant], graph.event_features], 1),
                                 graph.customer, num_customers)
      to_variant = segment_mean(jnp.concatenate([h_c[graph.customer], graph.event_features], 1),
                                graph.variant, num_variants)
      h_c, h_v = (nn.relu(self.customer_self[r](h_c) + self.customer_neighbours[r](to_customer)),
                  nn.relu(self.variant_self[r](h_v) + self.variant_neighbours[r](to_variant)))
    return h_c, h_v

  def __call__(self, graph: MessageGraph, customer: jax.Array, variant: jax.Array,
               event_features: jax.Array) -> jax.Array:
    """Return logits ``(n,)`` of the queried events ``(customer, variant, event_features)``."""
    h_c, h_v = self.node_embeddings(graph)
    return self.edge_mlp(jnp.concatenate([h_c[customer], h_v[variant], event_features], axis=1))
