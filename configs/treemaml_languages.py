"""TreeMAML on real languages: few-shot character models adapted down the language family tree.

Task ``meta_learning`` (:mod:`gnrev.train.meta_task`) on :class:`gnrev.meta.LanguageTasks`: a
task is one of the 22 meta-training languages of wordfreq's bundled word lists (27 Latin-script
languages, 5 held out: ``lv``, ``ms``, ``pt``, ``sk``, ``sv``); each meta-step samples
``num_support`` support words and 10 disjoint query words per language from the meta-train word
pools (the 2,000 most frequent words of a language, normalised onto ``a-z'``, half of them for
meta-training) and descends the mean query bits per character after K = 3 inner steps with
Adam (the outer optimizer). The shared model predicts each next character from the 4 before it
(embedding 8, one tanh layer of 32). The runs differ only in their inner rule
(``optimizers.<run>.inner``): ``no_adaptation`` (inner lr 0), ``maml``, ``fomaml`` (first
order), ``treemaml_linguistic`` (step 1 pools each family, step 2 each branch, step 3 each
sub-branch of the Glottolog tree) and ``treemaml_learned`` (average-linkage clusters of the
centred task-gradient cosines at every inner step).

One (shots, seed) per command:

  python -m gnrev.main --config=configs/treemaml_languages.py:shots=3,seed=0 \\
      --workdir=runs/treemaml_languages/shots_3/seed_0

Every shot size and seed, evaluation on meta-test words and on the held-out languages, the
learned clusters' ARI against the tree and the figure: ``experiments/treemaml_languages.py``.
Smoke run (seconds): ``:smoke``. The inner step size, outer learning rate and clustering
thresholds were chosen on meta-test words of the meta-training languages with batches of tasks
other than the reported ones (keys from 20000; experiments/README.md#treemaml-on-languages).
"""

import ml_collections

from configs.common import parse_arg, trainer_config

# The inner rule of each run (gnrev.train.meta_task).
METHODS = {
    "no_adaptation": {"rule": "none"},
    "maml": {"rule": "maml"},
    "fomaml": {"rule": "maml", "first_order": True},
    "treemaml_linguistic": {"rule": "tree", "tree": "true"},
    "treemaml_learned": {"rule": "tree", "tree": "learned"},
}


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, seed=0, shots=3)
  # One epoch of task.steps_per_epoch meta-steps.
  config = trainer_config(seed=options.seed, log_every=10, checkpoint_every=200, max_to_keep=1,
                          num_devices=1)
  config.task = ml_collections.ConfigDict({
      "name": "meta_learning",
      "family": {"name": "languages", "num_support": options.shots, "num_query": 10,
                 "num_words": 2000, "num_bands": 1, "context": 4, "max_length": 12,
                 "test_fraction": 0.5, "held_out": ("lv", "ms", "pt", "sk", "sv"),
                 "embed_dim": 8, "hidden": 32},
      "model": "family",           # the family's character MLP and bits-per-character loss
      "inner_lrs": (0.3, 0.3, 0.3),
      "first_order": False,
      "cluster": {"method": "average", "depth": 3, "recluster": "every_step",
                  "enforce_nesting": False, "thresholds": (-0.05, 0.05, 0.15), "center": True},
      "steps_per_epoch": 250,      # meta-steps
      "num_test_batches": 10,      # the launcher's own records: meta-train word pools
      "test_seed": 10_000,
      "eval_chunk": 10,
  })
  config.optimizers = ml_collections.ConfigDict({
      run: {"name": "adam", "learning_rate": 1e-2, "inner": inner}
      for run, inner in METHODS.items()})
  if options.smoke:
    # Ten languages (three held out) and a tiny model: the smoke run is compile time.
    config.task.family.update(
        languages=("de", "en", "nl", "sv", "da", "es", "pt", "cs", "sk", "fi"),
        held_out=("sv", "pt", "sk"), num_words=100, embed_dim=4, hidden=8)
    config.task.steps_per_epoch = 2
    config.task.num_test_batches = 1
    config.task.eval_chunk = 1
    config.checkpoint_every = 2
    config.log_every = 1
  return config
