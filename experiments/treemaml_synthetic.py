"""MAML vs TreeMAML (true tree, learned tree) vs no adaptation on hierarchical regression.

Meta-trains each method with Adam on freshly sampled task trees, then reports the query MSE
after each inner step on the same held-out meta-batches (mean and 95% interval,
``1.96 sd / sqrt(N)``, over meta-batches and seeds), batch-transductively as in the paper
(docs/meta.md). Writes ``<workdir>/treemaml_<kind>[_flat].json`` and ``.png``.

    python experiments/treemaml_synthetic.py --config=configs/treemaml_linear.py
    python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py \\
        --config.task.hierarchical=False
"""

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gnrev import meta  # noqa: E402  (repo root on the path for script use)

_CONFIG = config_flags.DEFINE_config_file("config", None, "TreeMAML experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "experiments/results", "Where JSON and PNG go.")

# "shared_first_step" pools the whole meta-batch at step 1, then runs singleton (MAML) steps: it
# isolates the gain of sharing the batch's root from the gain of the tree below it.
LABEL_MODES = {"no_adaptation": "singleton", "maml": "singleton", "treemaml_true": "true",
               "treemaml_learned": "learned", "shared_first_step": "root"}


def linear_loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def mlp_loss(params, batch):
  x, y = batch
  h = x
  for layer in params["hidden"]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


def init_params(config, key):
  if config.model == "linear":
    return {"w": jnp.zeros(config.task.dim), "b": jnp.zeros(())}
  sizes = (1,) + tuple(config.hidden)
  keys = jax.random.split(key, len(sizes))
  hidden = [{"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
  out = {"w": jax.random.normal(keys[-1], (sizes[-1],)) / jnp.sqrt(sizes[-1]), "b": jnp.zeros(())}
  return {"hidden": hidden, "out": out}


def make_learner(config, method):
  loss = linear_loss if config.model == "linear" else mlp_loss
  lrs = (0.0,) * len(config.inner_lrs) if method == "no_adaptation" else config.inner_lrs
  c = config.cluster
  cluster_fn = functools.partial(
      meta.cluster_tasks, depth=c.depth, num_steps=len(lrs), method=c.method, center=c.center,
      margin=c.margin, split_threshold=c.split_threshold, thresholds=tuple(c.thresholds))
  return meta.TreeMAML(loss, lrs, first_order=config.first_order, cluster_fn=cluster_fn,
                       recluster=c.recluster, enforce_nesting=c.enforce_nesting)


def schedule(mode, true_labels):
  if mode == "singleton":
    return meta.singleton_labels(*true_labels.shape)
  if mode == "root":
    return meta.singleton_labels(*true_labels.shape).at[0].set(0)
  return true_labels if mode == "true" else None


def run_method(config, gen, method, seeds):
  """Query MSE after each inner step, ``(len(seeds) * num_test_batches, K + 1)``, and the
  adjusted Rand index of the used vs the true labels per inner step, ``(..., K)``.

  The true labels have one row per tree level, ``(D, n)``; ARI rows beyond ``D`` compare with
  singletons."""
  learner = make_learner(config, method)
  mode = LABEL_MODES[method]
  optimizer = optax.adam(config.outer_lr)
  meta_step = learner.make_meta_step(optimizer)

  @jax.jit
  def train_step(theta, opt_state, key):
    support, query, labels = gen.sample(key)
    return meta_step(theta, opt_state, support, query, schedule(mode, labels))

  @jax.jit
  def evaluate(theta, keys):
    def one(key):
      support, query, labels = gen.sample(key)
      path, used = learner.adaptation_path(theta, support, schedule(mode, labels))
      losses = jax.vmap(lambda p: jnp.mean(jax.vmap(learner.loss_fn)(p, query)))(path)
      return losses, used, labels
    return jax.lax.map(one, keys, batch_size=config.eval_chunk)

  # The test meta-batches are the same for every method and seed; tuning used other keys.
  test_keys = jax.random.split(jax.random.key(10_000), config.num_test_batches)
  losses, aris = [], []
  for seed in seeds:
    theta = init_params(config, jax.random.key(seed))
    opt_state = optimizer.init(theta)
    train_key = jax.random.fold_in(jax.random.key(seed), 1)
    for step in range(config.meta_steps):
      theta, opt_state, _ = train_step(theta, opt_state, jax.random.fold_in(train_key, step))
    loss, used, true = map(np.asarray, evaluate(theta, test_keys))
    losses.append(loss)
    true = np.concatenate([true, np.broadcast_to(np.arange(true.shape[-1]), (
        true.shape[0], used.shape[1] - true.shape[1], true.shape[-1]))], axis=1)
    aris.append([[adjusted_rand_score(t, u) for t, u in zip(tb, ub)] for tb, ub in zip(true, used)])
  return np.concatenate(losses), np.concatenate(aris)


def main(argv):
  del argv
  config = _CONFIG.value
  task = dict(config.task)
  gen = meta.HierarchicalRegression(**task)
  seeds = [int(s) for s in str(config.seeds).split(",")]
  methods = str(config.methods).split(",")
  results, start = {}, time.time()
  for method in methods:
    losses, aris = run_method(config, gen, method, seeds)
    mean = losses.mean(0)
    half = 1.96 * losses.std(0) / np.sqrt(len(losses))
    results[method] = {"mean": mean.tolist(), "ci95": half.tolist(),
                       "ari_vs_true_tree_per_step": aris.mean(0).tolist()}
    print(f"{method:18s} " + " ".join(f"{m:.4f}±{h:.4f}" for m, h in zip(mean, half))
          + "  ARI " + " ".join(f"{a:.3f}" for a in aris.mean(0)), flush=True)
  final = {m: r["mean"][-1] for m, r in results.items()}
  summary = {
      "task": task, "seeds": seeds, "meta_steps": config.meta_steps,
      "num_test_batches": config.num_test_batches, "inner_lrs": list(config.inner_lrs),
      "first_order": config.first_order, "cluster": dict(config.cluster),
      "query_mse_per_inner_step": results,
      "treemaml_true_vs_maml_reduction": 1 - final["treemaml_true"] / final["maml"]
      if {"maml", "treemaml_true"} <= set(final) else None,
      "treemaml_learned_vs_maml_reduction": 1 - final["treemaml_learned"] / final["maml"]
      if {"maml", "treemaml_learned"} <= set(final) else None,
      "wall_seconds": time.time() - start,
  }
  name = (f"treemaml_{task['kind']}" + ("" if task["hierarchical"] else "_flat")
          + config.get("tag", ""))
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, name + ".json"), "w") as f:
    json.dump(summary, f, indent=1, default=list)
  plot(results, name, os.path.join(_WORKDIR.value, name + ".png"))
  print(json.dumps({k: summary[k] for k in ("treemaml_true_vs_maml_reduction",
                                            "treemaml_learned_vs_maml_reduction",
                                            "wall_seconds")}))


def plot(results, title, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=90)
  for method, r in results.items():
    mean, half = np.array(r["mean"]), np.array(r["ci95"])
    steps = np.arange(len(mean))
    ax.plot(steps, mean, marker="o", label=method)
    ax.fill_between(steps, mean - half, mean + half, alpha=0.25)
  ax.set_xlabel("inner step")
  ax.set_ylabel("query MSE")
  ax.set_yscale("log")
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
