"""TreeMAML on real languages: does adapting down the language family tree beat MAML?

Runs the launcher config ``configs/treemaml_languages.py`` (task ``meta_learning`` on
:class:`gnrev.meta.LanguageTasks`) once per (shots, seed) through
:func:`gnrev.train.train_and_evaluate`, each in ``<workdir>/shots_<k>/seed_<s>``, reads the
training records from its ``metrics.jsonl``, and evaluates every run's meta-trained
initialisation on two protocols, with the same held-out batches of tasks for every run and seed:

* ``test``: the 22 meta-training languages, words never seen in meta-training;
* ``held_out``: the 5 held-out languages (``lv``, ``ms``, ``pt``, ``sk``, ``sv``), adapted in a
  batch with the meta-training languages (meta-test words), each placed in the tree by its
  genealogy; only their query words count.

It reports the query bits per character after each inner step (mean and 95% interval,
``1.96 sd / sqrt(N)`` over batches and seeds), the adjusted Rand index of the learned clusters
against the families, branches and sub-branches at every inner step, and draws the learned tree
(the most frequent clustering over the test batches of seed 0) beside the linguistic one.
Outputs go to the workdir; ``--results_dir=experiments/results`` updates the committed results.

    python experiments/treemaml_languages.py --workdir=runs/treemaml_languages
    python experiments/treemaml_languages.py --shots=3,10 --seeds=0,1,2 \\
        --results_dir=experiments/results
    python experiments/treemaml_languages.py --config=configs/treemaml_languages.py:smoke \
        --workdir=/tmp/tml_smoke   # 3 shots, seed 0, runs of SMOKE_RUNS
    # one launch per shot size side by side (W=runs/treemaml_languages), then one JSON + figure:
    python experiments/treemaml_languages.py --shots=3 --workdir=$W --results_dir=$W/shots_3
    python experiments/treemaml_languages.py --shots=10 --workdir=$W --results_dir=$W/shots_10
    python experiments/treemaml_languages.py --combine=$W/shots_3,$W/shots_10 \\
        --results_dir=experiments/results
"""

from __future__ import annotations

import collections
import copy
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gnrev import meta, train  # noqa: E402  (repo root on the path for script use)
from gnrev.data import languages as lang_data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "treemaml_languages.py")
PROTOCOLS = ("test", "held_out")
ARI_LEVELS = ("family", "branch", "subbranch")


def _define_flags() -> None:
  """The script's flags, defined only when it runs as a script (tests import it)."""
  global _CONFIG, _WORKDIR, _RESULTS_DIR, _SHOTS, _SEEDS, _EVAL_BATCHES, _COMBINE
  _WORKDIR = flags.DEFINE_string("workdir", "runs/treemaml_languages", "Launcher workdirs.")
  _RESULTS_DIR = flags.DEFINE_string("results_dir", None,
                                     "Where JSON and PNG go (default: the workdir).")
  _SHOTS = flags.DEFINE_list("shots", ["3", "10"], "Support words per task, one launch each "
                             "(a smoke run: 3 unless given).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (meta-parameter init and batches; "
                             "a smoke run: 0 unless given).")
  _CONFIG = flags.DEFINE_string("config", CONFIG, "The config, with ':smoke' for its smoke size "
                                "(seconds); shots and seeds come from --shots and --seeds.")
  _EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 100,
                                       "Held-out batches of tasks per protocol (keys from 10000).")
  _COMBINE = flags.DEFINE_list(
      "combine", None, "Instead of running: merge the results JSON of these directories (e.g. one "
      "launch per shot size run side by side) into one JSON and figure.")


EVAL_SEED = 10_000


def shot_config(base, shots: int, seed: int):
  """The launcher config of one (shots, seed) pair."""
  config = copy.deepcopy(base)
  config.seed = seed
  config.task.family.num_support = shots
  return config


def protocol_families(config) -> dict:
  """The evaluation task families: meta-test words, and held-out languages."""
  options = dict(config.task.family)
  options.pop("name", None)
  return {protocol: meta.LanguageTasks(protocol, **options) for protocol in PROTOCOLS}


def evaluate_run(config, run: str, params, families: dict, keys) -> dict:
  """Query bits/char per inner step ``(batches, K + 1)`` and used labels ``(batches, K, n)``
  of one run's meta-trained parameters on each protocol's batches of tasks."""
  task = train.tasks.build_task(config)
  inner = task.inner(config.optimizers[run])
  out = {}
  for protocol, family in families.items():
    learner = task.learner(inner, family)

    @jax.jit
    def one(params, key, learner=learner, family=family):
      support, query, labels = family.sample(key)
      path, used = learner.adaptation_path(params, support, task.schedule(inner, labels))
      losses = jax.vmap(lambda p: jnp.mean(jax.vmap(family.loss_fn)(p, query)))(path)
      return losses, used

    losses, used = zip(*(one(params, key) for key in keys))
    out[protocol] = (np.stack([np.asarray(l) for l in losses]),
                     np.stack([np.asarray(u) for u in used]))
  return out


def aris_per_step(used: np.ndarray, family) -> dict:
  """Mean ARI of the used clusters at each inner step against each tree level."""
  from sklearn.metrics import adjusted_rand_score
  return {level: [float(np.mean([adjusted_rand_score(family.level_labels(level), u[k])
                                 for u in used])) for k in range(used.shape[1])]
          for level in ARI_LEVELS}


def interval(values: np.ndarray) -> tuple[list, list]:
  """Mean and 95% half-width ``1.96 sd / sqrt(N)`` over the leading axis."""
  return (values.mean(0).tolist(),
          (1.96 * values.std(0) / np.sqrt(len(values))).tolist())


def modal_tree(used: np.ndarray) -> np.ndarray:
  """The most frequent (nested, for drawing) schedule over batches ``(batches, K, n)``."""
  nested = []
  for labels in used:
    rows = [np.asarray(labels[0])]
    for row in labels[1:]:
      rows.append(np.asarray(meta.nest_labels(jnp.asarray(rows[-1]), jnp.asarray(row))))
    nested.append(np.stack(rows))
  counts = collections.Counter(tuple(map(tuple, n)) for n in nested)
  return np.array(counts.most_common(1)[0][0])


def launch_and_evaluate(base, workdir: str, shots: int, seed: int, eval_batches: int) -> str:
  """Trains every run of one (shots, seed) through the launcher and evaluates it on both
  protocols; the arrays go to ``<run dir>/evaluation.npz`` (kept: a second call only reads)."""
  run_dir = os.path.join(workdir, f"shots_{shots}", f"seed_{seed}")
  path = os.path.join(run_dir, "evaluation.npz")
  if os.path.exists(path):
    return path
  config = shot_config(base, shots, seed)
  results = train.train_and_evaluate(config, run_dir)
  records = train.read_metrics(run_dir)
  families = protocol_families(config)
  keys = jax.random.split(jax.random.key(EVAL_SEED), eval_batches)
  arrays = {}
  for run, result in results.items():
    final = [r["train_loss"] for r in records if r["run"] == run and "train_loss" in r]
    arrays[f"{run}/train_loss"] = np.array(final[-1])
    for protocol, (losses, used) in evaluate_run(config, run, result["params"], families,
                                                 keys).items():
      arrays[f"{run}/{protocol}/losses"], arrays[f"{run}/{protocol}/used"] = losses, used
  np.savez(path, **arrays)
  return path


def run_experiment(base, workdir: str, shots_list, seeds, eval_batches: int = 100) -> dict:
  """Launches and evaluates every (shots, seed) not yet evaluated, and summarises them all
  (the results JSON)."""
  start = time.time()
  summary = {"shots": {}, "seeds": list(seeds), "tree": lang_data.tree_as_text()}
  for shots in shots_list:
    evaluations = [np.load(launch_and_evaluate(base, workdir, shots, seed, eval_batches))
                   for seed in seeds]
    families = protocol_families(shot_config(base, shots, seeds[0]))
    shot_summary = {}
    for run in base.optimizers:
      entry = {"final_train_loss_per_seed": [float(e[f"{run}/train_loss"]) for e in evaluations]}
      for protocol in PROTOCOLS:
        per_seed = [e[f"{run}/{protocol}/losses"] for e in evaluations]
        used = [e[f"{run}/{protocol}/used"] for e in evaluations]
        mean, half = interval(np.concatenate(per_seed))
        entry[protocol] = {"bits_per_char": mean, "ci95": half,
                           "final_per_seed": [float(l[:, -1].mean()) for l in per_seed],
                           "ari_per_step": aris_per_step(np.concatenate(used), families[protocol])}
        if protocol == "test":
          entry["modal_tree"] = modal_tree(used[0]).tolist()
      shot_summary[run] = entry
    summary["shots"][str(shots)] = shot_summary
  summary["task"] = base.task.to_dict()
  summary["outer"] = {run: opt.to_dict() for run, opt in base.optimizers.items()}
  summary["eval_batches"] = eval_batches
  summary["wall_seconds"] = time.time() - start
  return summary


def table(summary: dict) -> str:
  """Markdown table: final query bits/char (95%) per shots, run and protocol, and learned ARI."""
  lines = ["| shots | run | test words bits/char | held-out languages bits/char | "
           "ARI step 1 vs family | ARI step 2 vs branch |", "|---|---|---|---|---|---|"]
  for shots, runs in summary["shots"].items():
    for run, entry in runs.items():
      cells = [f"{entry[p]['bits_per_char'][-1]:.3f} ± {entry[p]['ci95'][-1]:.3f}"
               for p in PROTOCOLS]
      ari = entry["test"]["ari_per_step"]
      lines.append(f"| {shots} | {run} | {cells[0]} | {cells[1]} | "
                   f"{ari['family'][0]:.2f} | {ari['branch'][1]:.2f} |")
  return "\n".join(lines)


def draw_tree(ax, labels: np.ndarray, names, title: str) -> None:
  """Elbow dendrogram of a nested ``(K, n)`` schedule: the root at x = 0, the clusters of inner
  step k at x = k, the tasks at x = K + 1 (in an order that keeps every cluster together)."""
  labels = np.asarray(labels)
  num_steps, num_tasks = labels.shape
  order = sorted(range(num_tasks), key=lambda i: tuple(labels[:, i]) + (i,))
  y = {i: float(rank) for rank, i in enumerate(order)}
  levels = [[frozenset(range(num_tasks))]]
  for row in labels:
    levels.append([frozenset(np.flatnonzero(row == c).tolist()) for c in dict.fromkeys(row)])
  levels.append([frozenset([i]) for i in order])
  height = lambda members: float(np.mean([y[i] for i in members]))  # noqa: E731
  for depth in range(len(levels) - 1):
    for parent in levels[depth]:
      children = [c for c in levels[depth + 1] if c <= parent]
      ys = [height(c) for c in children]
      ax.plot([depth, depth + 0.5], [height(parent)] * 2, color="k", lw=0.8)
      ax.plot([depth + 0.5] * 2, [min(ys), max(ys)], color="k", lw=0.8)
      for child_y in ys:
        ax.plot([depth + 0.5, depth + 1], [child_y] * 2, color="k", lw=0.8)
  for i in order:
    ax.text(len(levels) - 1 + 0.1, y[i], names[i], va="center", fontsize=7)
  ax.set_xticks(range(len(levels)))
  ax.set_xticklabels(["root"] + [f"step {k + 1}" for k in range(num_steps)] + ["task"],
                     fontsize=7)
  ax.set_yticks([])
  ax.invert_yaxis()
  ax.set_title(title, fontsize=9)
  for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)


def plot(summary: dict, names, linguistic: np.ndarray, path: str) -> None:
  """Bits/char per inner step (one panel per shots and protocol) and the two trees."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  shots = list(summary["shots"])
  fig, axes = plt.subplots(2, max(2, len(shots) * len(PROTOCOLS) // 2 + 1),
                           figsize=(4 * max(2, len(shots)), 7), dpi=90, squeeze=False)
  panels = [(s, p) for s in shots for p in PROTOCOLS]
  curve_axes = [ax for ax in axes.ravel()][:len(panels)]
  for ax, (s, protocol) in zip(curve_axes, panels):
    for run, entry in summary["shots"][s].items():
      mean, half = np.array(entry[protocol]["bits_per_char"]), np.array(entry[protocol]["ci95"])
      steps = np.arange(len(mean))
      ax.plot(steps, mean, marker="o", ms=3, label=run)
      ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_title(f"{s} shots, {protocol.replace('_', '-')}", fontsize=9)
    ax.set_xlabel("inner step")
    ax.set_ylabel("query bits / char")
  curve_axes[0].legend(fontsize=6)
  tree_axes = [ax for ax in axes.ravel()][len(panels):]
  for ax in tree_axes:
    ax.axis("off")
  learned_run = next((r for r in summary["shots"][shots[0]] if "learned" in r), None)
  if learned_run is not None and len(tree_axes) >= 2:
    for ax in tree_axes[:2]:
      ax.axis("on")
    draw_tree(tree_axes[0], linguistic, names, "linguistic tree (Glottolog)")
    draw_tree(tree_axes[1], np.array(summary["shots"][shots[0]][learned_run]["modal_tree"]),
              names, f"learned tree ({shots[0]} shots, most frequent)")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def combine(paths) -> dict:
  """One summary from the summaries of separate launches (their shot sizes side by side)."""
  summaries = [json.load(open(path)) for path in paths]
  merged = dict(summaries[0], shots={}, wall_seconds=sum(s["wall_seconds"] for s in summaries))
  for summary in summaries:
    if summary["seeds"] != merged["seeds"] or summary["eval_batches"] != merged["eval_batches"]:
      raise ValueError(f"Cannot combine summaries with different seeds or eval_batches: {paths}.")
    merged["shots"].update(summary["shots"])
  return merged


SMOKE_RUNS = ("maml", "treemaml_linguistic", "treemaml_learned")  # what a smoke run trains


def main(argv):
  del argv
  train.metrics.quiet_library_logs()
  path, _, arg = _CONFIG.value.partition(":")
  if arg not in ("", "smoke"):
    raise app.UsageError(f"--config={_CONFIG.value}: the only colon argument is 'smoke'.")
  smoke = arg == "smoke"
  base = train.load_config(path, arg or None)
  if smoke:  # the runs of the learned-vs-linguistic-vs-MAML comparison; each compiles its own
    with base.unlocked():
      for run in set(base.optimizers) - set(SMOKE_RUNS):
        del base.optimizers[run]
  # A smoke run checks the pipeline: one launch (one shot size, one seed) unless told otherwise.
  shots_list = [int(s) for s in (_SHOTS.value if _SHOTS.present or not smoke else ["3"])]
  seeds = [int(s) for s in (_SEEDS.value if _SEEDS.present or not smoke else ["0"])]
  if _COMBINE.value:
    summary = combine([os.path.join(d, "treemaml_languages.json") for d in _COMBINE.value])
    shots_list = [int(s) for s in summary["shots"]]
  else:
    summary = run_experiment(base, _WORKDIR.value, shots_list, seeds,
                             2 if smoke else _EVAL_BATCHES.value)
  out_dir = _RESULTS_DIR.value or _WORKDIR.value
  os.makedirs(out_dir, exist_ok=True)
  name = "treemaml_languages" + ("_smoke" if smoke else "")
  with open(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump(summary, f, indent=1)
  family = protocol_families(shot_config(base, shots_list[0], seeds[0]))["test"]
  plot(summary, family.task_languages, family.labels, os.path.join(out_dir, name + ".png"))
  print(table(summary))
  print(json.dumps({"wall_seconds": summary["wall_seconds"], "out": out_dir}))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
