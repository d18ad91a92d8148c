"""Meta-step time of TreeMAML over MAML (same K, tasks and model), fixed and learned trees.

Times one jitted second-order meta-step (Adam outer optimizer) on a hierarchical sinusoid
meta-batch (--branching, 4 x 4 x 4 = 64 tasks by default) with the 1-40-40-1 MLP, after
compilation, interleaving the variants in every repeat (medians reported):

  maml               singleton clusters (plain MAML)
  fixed              the generator's true tree (the cost of pooling; target <= 1.3)
  learned_threshold  the tree learned at every inner step by the jittable threshold cut, inside
                     the meta-step (target <= 1.3)
  learned_otd        the host-side OTD-style insertion through jax.pure_callback (--otd)

Examples (repository root):
  python benchmarks/treemaml_step.py
  python -m benchmarks.treemaml_step --repeats 5 --branching 2,2,2 --no-otd
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

INNER_STEPS = 3


def _add_arguments(parser):
  parser.add_argument("--repeats", type=common.positive_int, default=50,
                      help="interleaved timed repeats per meta-step (default: %(default)s)")
  parser.add_argument("--branching", default="4,4,4",
                      help="children per level of the task tree; the meta-batch has their "
                           "product of tasks (default: %(default)s)")
  parser.add_argument("--otd", action=argparse.BooleanOptionalAction, default=True,
                      help="also time the host-side OTD clustering (slow; default: on)")


def main(argv=None):
  args = common.parse_args(__doc__, _add_arguments, argv)
  branching = tuple(int(b) for b in args.branching.split(",") if b)
  if len(branching) != INNER_STEPS or min(branching) < 1:
    raise SystemExit(f"--branching needs {INNER_STEPS} positive sizes (one per inner step), "
                     f"got {args.branching!r}.")
  import jax  # noqa: PLC0415  (after parsing: --help answers without importing JAX)
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from gnrev import meta  # noqa: PLC0415

  def mlp_loss(params, batch):
    x, y = batch
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    h = jax.nn.relu(h @ params["w2"] + params["b2"])
    return jnp.mean((h @ params["w3"] + params["b3"] - y) ** 2)

  gen = meta.HierarchicalRegression("sinusoid", branching=branching, num_support=10)
  support, query, labels = gen.sample(jax.random.key(0))
  keys = jax.random.split(jax.random.key(1), 3)
  theta = {"w1": jax.random.normal(keys[0], (1, 40)), "b1": jnp.zeros(40),
           "w2": jax.random.normal(keys[1], (40, 40)) / 6.3, "b2": jnp.zeros(40),
           "w3": jax.random.normal(keys[2], (40,)) / 6.3, "b3": jnp.zeros(())}
  lrs = (0.01,) * INNER_STEPS
  optimizer = optax.adam(1e-3)
  state = (theta, optimizer.init(theta))

  def call(learner, schedule):
    return (jax.jit(learner.make_meta_step(optimizer)), (*state, support, query, schedule))

  learner = meta.TreeMAML(mlp_loss, lrs)
  calls = {"maml": call(learner, meta.singleton_labels(INNER_STEPS, gen.num_tasks)),
           "fixed": call(learner, labels)}
  methods = ("threshold", "otd") if args.otd else ("threshold",)
  for method in methods:
    cluster_fn = functools.partial(meta.cluster_tasks, depth=2, num_steps=INNER_STEPS,
                                   method=method)
    calls[f"learned_{method}"] = call(meta.TreeMAML(mlp_loss, lrs, cluster_fn=cluster_fn), None)
  loads = [common.load_average()]
  timings = common.time_interleaved(calls, args.repeats)
  loads.append(common.load_average())
  medians = {name: t["median_s"] for name, t in timings.items()}
  common.emit({
      "benchmark": "treemaml_step", "device": jax.devices()[0].platform,
      "num_tasks": gen.num_tasks, "branching": list(branching), "inner_steps": INNER_STEPS,
      "repeats": args.repeats, "timing_note": common.noise_note(timings, loads),
      "load_per_cpu": loads, "seconds": timings, "targets": {"fixed": 1.3, "learned": 1.3},
      **{f"{name}_over_maml": medians[name] / medians["maml"] for name in calls
         if name != "maml"}})


if __name__ == "__main__":
  main()
