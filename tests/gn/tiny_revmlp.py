"""A tiny float64 RevMLP shared by the Gauss-Newton tests (n=8, d=12, M=32, L=3, c=4)."""

import jax
import jax.numpy as jnp
import numpy as np

from gnrev import nets


def tiny_problem(batch_size=8, features=12, expansion=32, num_blocks=3, num_classes=4,
                 linear_first_block=False, init_std=0.3, seed=0):
  """``(model, variables, x, labels, apply_fn)``; ``apply_fn(params, x)`` is jvp-compatible."""
  model = nets.RevMLP(num_blocks=num_blocks, expansion=expansion, num_classes=num_classes,
                      linear_first_block=linear_first_block, init_std=init_std,
                      param_dtype=jnp.float64)
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], (batch_size, features), jnp.float64)
  labels = jax.random.randint(keys[1], (batch_size,), 0, num_classes)
  variables = model.init(keys[2], x)
  autodiff = model.clone(memory_mode="autodiff")
  apply_fn = lambda params, inputs: autodiff.apply({**variables, "params": params}, inputs)
  return model, variables, x, labels, apply_fn


def feature_matrix_ranks(model, variables, x):
  """Numerical ranks (numpy's default tolerance) of every branch feature matrix, ``(L, 2)``."""
  blocks_params, blocks_fixed, _ = model.apply(variables, x.shape[-1],
                                               method=model.stack_variables)
  h1, _ = nets.split_sizes(x.shape[-1])
  x1, x2 = x[:, :h1], x[:, h1:]
  ranks = []
  for params, fixed, activation in zip(blocks_params, blocks_fixed, model.activations):
    y1, y2 = nets.coupling_block(params, fixed, x1, x2, activation)
    ranks.append([np.linalg.matrix_rank(np.asarray(nets.feature_matrix(u, fixed[b], activation)))
                  for u, b in ((x2, "F"), (y1, "G"))])
    x1, x2 = y1, y2
  return np.array(ranks)
