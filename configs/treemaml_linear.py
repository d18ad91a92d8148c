"""TreeMAML vs MAML on hierarchical linear regression: one seed, every inner rule as a run.

Task ``meta_learning`` (:mod:`gnrev.train.meta_task`): each meta-step samples one random task
tree (4 x 4 x 4 = 64 linear tasks, d = 8, 5 support / 10 query points) and descends the mean
query loss after K = 3 inner steps with Adam 1e-2 (the outer optimizer). The runs differ only in
their inner rule (``optimizers.<run>.inner``): ``no_adaptation`` (inner lr 0), ``maml``
(every task alone), ``shared_first_step`` (step 1 pools the whole batch of tasks, then MAML
steps), ``treemaml_true`` (the generator's tree) and ``treemaml_learned`` (gradient clustering
at every inner step). Evaluation: the query MSE after each inner step on 600 held-out batches of
tasks (keys from 10000, the same for every run and seed; pooling uses the other tasks of the
held-out batch), and the adjusted Rand index of the used against the true labels.

One seed per command:

  python -m gnrev.main --config=configs/treemaml_linear.py:seed=0 \\
      --workdir=runs/treemaml_linear/seed_0

Every seed, the table and the plot (runs the launcher for each seed, then reads metrics.jsonl):

  python experiments/treemaml_synthetic.py --config=configs/treemaml_linear.py \\
      --workdir=runs/treemaml_linear
  # flat, non-hierarchical tasks (where TreeMAML stops helping):
  ... --config.task.family.hierarchical=False
  # more shots per task (results get the tag in their name):
  ... --config.task.family.num_support=20 --tag=_20shot
  # full protocol: more seeds and meta-steps
  ... --seeds=0,1,2,3,4 --config.task.steps_per_epoch=2000

Smoke run (seconds): ``:smoke``. The paper's generator, shots, K, step sizes and clustering
constants are unknown to us: every value below is our default. The learned tree uses
average-linkage cuts of the centred gradient cosines at (-0.05, 0.1), chosen on validation
batches of tasks (keys from 20000, never the test keys); experiments/README.md#treemaml lists
what was tried. The earlier single-linkage cut at (0.3, 0.6) chained the whole batch of tasks
into one cluster at step 1 (ARI 0 against the true tree).
"""

import ml_collections

from configs.common import parse_arg, trainer_config

# The inner rule of each run (gnrev.train.meta_task).
METHODS = {
    "no_adaptation": {"rule": "none"},
    "maml": {"rule": "maml"},
    # Pools the whole batch at step 1, then singleton (MAML) steps: it isolates the gain of
    # sharing the batch's root from the gain of the tree below it.
    "shared_first_step": {"rule": "tree", "tree": "root"},
    "treemaml_true": {"rule": "tree", "tree": "true"},
    "treemaml_learned": {"rule": "tree", "tree": "learned"},
}


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, seed=0)
  # One epoch of task.steps_per_epoch meta-steps, evaluated at its end (and at step 0).
  config = trainer_config(seed=options.seed, log_every=10, checkpoint_every=100, max_to_keep=1,
                          num_devices=1)
  config.task = ml_collections.ConfigDict({
      "name": "meta_learning",
      "family": {"kind": "linear", "branching": (4, 4, 4), "level_stds": (1.0, 0.5, 0.25),
                 "dim": 8, "root_std": 1.0, "noise_std": 0.1, "num_support": 5,
                 "num_query": 10, "hierarchical": True},
      "model": "linear",
      "hidden": (40, 40),
      "inner_lrs": (0.1, 0.1, 0.1),
      "first_order": False,
      # Learned tree: cluster the inner-step task gradients (depth = levels above the leaves).
      "cluster": {"method": "average", "depth": 2, "recluster": "every_step",
                  "enforce_nesting": False, "thresholds": (-0.05, 0.1), "margin": 0.05,
                  "split_threshold": 0.0, "center": True},
      "steps_per_epoch": 300,      # meta-steps
      "num_test_batches": 600,
      "test_seed": 10_000,
      "eval_chunk": 100,
  })
  config.optimizers = ml_collections.ConfigDict(
      {name: {"name": "adam", "learning_rate": 1e-2, "inner": inner}
       for name, inner in METHODS.items()})
  if options.smoke:
    config.task.steps_per_epoch = 3
    config.task.num_test_batches = 4
    config.task.eval_chunk = 2
    config.checkpoint_every = 2
    config.log_every = 1
  return config
