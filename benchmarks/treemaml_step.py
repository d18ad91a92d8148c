"""Meta-step time of TreeMAML over MAML (same K, tasks and model), fixed and learned trees.

Times one jitted second-order meta-step (Adam outer optimizer) on a 64-task hierarchical
sinusoid meta-batch with the 1-40-40-1 MLP, after compilation, and prints one JSON object:

    python benchmarks/treemaml_step.py [--repeats 50]

``fixed_over_maml`` is the cost of pooling (target <= 1.3); ``learned_*_over_maml`` adds
clustering the task gradients at every inner step (jittable threshold cut, and the host-side
OTD-style insertion through ``jax.pure_callback``).
"""

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gnrev import meta  # noqa: E402


def mlp_loss(params, batch):
  x, y = batch
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  h = jax.nn.relu(h @ params["w2"] + params["b2"])
  return jnp.mean((h @ params["w3"] + params["b3"] - y) ** 2)


def time_step(learner, theta, support, query, labels, repeats):
  optimizer = optax.adam(1e-3)
  step = jax.jit(learner.make_meta_step(optimizer))
  state = (theta, optimizer.init(theta))
  jax.block_until_ready(step(*state, support, query, labels))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(*state, support, query, labels))
    best = min(best, time.perf_counter() - start)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=50)
  args = parser.parse_args()
  gen = meta.HierarchicalRegression("sinusoid", branching=(4, 4, 4), num_support=10)
  support, query, labels = gen.sample(jax.random.key(0))
  keys = jax.random.split(jax.random.key(1), 3)
  theta = {"w1": jax.random.normal(keys[0], (1, 40)), "b1": jnp.zeros(40),
           "w2": jax.random.normal(keys[1], (40, 40)) / 6.3, "b2": jnp.zeros(40),
           "w3": jax.random.normal(keys[2], (40,)) / 6.3, "b3": jnp.zeros(())}
  lrs = (0.01,) * 3
  learner = meta.TreeMAML(mlp_loss, lrs)
  timings = {
      "maml": time_step(learner, theta, support, query,
                        meta.singleton_labels(3, gen.num_tasks), args.repeats),
      "fixed": time_step(learner, theta, support, query, labels, args.repeats),
  }
  for method in ("threshold", "otd"):
    cluster_fn = functools.partial(meta.cluster_tasks, depth=2, num_steps=3, method=method)
    learned = meta.TreeMAML(mlp_loss, lrs, cluster_fn=cluster_fn)
    timings[f"learned_{method}"] = time_step(learned, theta, support, query, None,
                                             max(3, args.repeats // 5))
  print(json.dumps({
      "device": jax.devices()[0].platform, "num_tasks": gen.num_tasks, "inner_steps": 3,
      "seconds": timings,
      "fixed_over_maml": timings["fixed"] / timings["maml"],
      "learned_threshold_over_maml": timings["learned_threshold"] / timings["maml"],
      "learned_otd_over_maml": timings["learned_otd"] / timings["maml"],
  }))


if __name__ == "__main__":
  main()
