"""FishLeg Surgeon vs diagonal-Fisher OBS vs magnitude pruning on real digits (``mnist5k``).

Two stages per (model, seed), both ordinary launcher runs (:mod:`gnrev.train.pruning`):

1. ``stage=dense`` (the default): the dense model trained by Adam;
2. ``stage=prune``: every pruning variant of the grid as one run of the launch, each starting
   from the dense run's checkpoint (``config.init_from``) with a fresh Adam state, pruned on its
   schedule and fine-tuned with its masks kept. Run names: ``<method>_<ranking>_<schedule>_<pct>``.

Each run's ``metrics.jsonl`` records give "without fine-tuning" (the step-0 record's
``pruned_test_accuracy``, and ``sweep<pct>_test_accuracy`` for the one-shot sweep over every
sparsity of :data:`SPARSITIES` from the same curvature) and "with fine-tuning" (the last record's
``test_accuracy``); ``cubic`` prunes gradually with fine-tuning between the pruning steps.

Run (one model and seed; ``experiments/pruning.py`` runs the whole grid and tabulates it):

  python -m gnrev.main --config=configs/pruning.py:model=mlp,seed=0 \\
      --workdir=runs/pruning/mlp_s0/dense
  python -m gnrev.main --config=configs/pruning.py:model=mlp,seed=0,stage=prune \\
      --workdir=runs/pruning/mlp_s0/prune --config.init_from.workdir=runs/pruning/mlp_s0/dense

Smoke run (seconds): ``:smoke`` (and ``:smoke,stage=prune`` with ``init_from`` set).

Models: ``mlp`` 784-300-100-10 (LeNet-300-100's shape, 266,610 weights), ``cnn`` two 3x3 conv
layers (8, 16 channels, 2x max-pooling) and a dense head (9,098 weights). Data: the 4,000 / 1,000
real MNIST digits of ``mnist5k``, MNIST-standardised.

CUT relative to the full protocol (every method x ranking x sparsity, one-shot and gradual, each
with and without fine-tuning, at the FLS paper's curvature budgets), to fit a 2-core CPU shared by
eight engineers (load average 20-32 while it ran: this study got about a fifth of a core per
process):

* without fine-tuning: the full grid one-shot (3 methods x 2 rankings x 6 sparsities, by the
  sweep); gradual pruning without fine-tuning is not run;
* with fine-tuning: one-shot at 90% (both rankings) and gradual (3 cubic steps 10 steps apart,
  global ranking) at 90% only; fine-tuning is one epoch (31 Adam steps, step size 3e-4);
* dense training 10 epochs (310 Adam steps); Fisher statistics (FLS's diagonal warm start and
  diagonal-Fisher OBS) on 512 training examples; FishLeg Surgeon's Q fitted with 150 aux steps
  (batch 128) instead of 1000 and refined with 10 between gradual steps instead of 50; the CNN
  is small (8 / 16 channels).

Wall-clock (measured, 2 models x 3 seeds, up to six processes at ``nice -n 10``, load average
20-42): 42.9 minutes for the whole study (seed 0 alone: MLP 29.6 min, CNN 42.5 min; seeds 1-2 ran
in parallel processes, 18-29 min each); per seed in ``wall_seconds`` of
``experiments/results/pruning_mnist5k.json``.
"""

import ml_collections

from configs.common import data_config, parse_arg, trainer_config

MODELS = {"mlp": {"name": "mlp", "hidden": (300, 100)},
          "cnn": {"name": "cnn", "features": (8, 16)}}
METHODS = ("fishleg_surgeon", "diagonal_fisher", "magnitude")
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
# The runs of a prune launch: (schedule, ranking, target sparsity, sweep). One run per method and
# ranking sweeps every sparsity one-shot without fine-tuning (from one fit of the curvature);
# fine-tuning is run at 90% only (the CPU budget; see CUT above).
GRID = (("oneshot", "global", 0.9, SPARSITIES), ("oneshot", "layer", 0.9, SPARSITIES),
        ("cubic", "global", 0.9, ()))


def run_name(method: str, ranking: str, schedule: str, sparsity: float) -> str:
  return f"{method}_{ranking}_{schedule}_{round(100 * sparsity)}"


def get_config(arg=None) -> ml_collections.ConfigDict:
  options = parse_arg(arg, smoke=False, model="mlp", seed=0, stage="dense")
  if options.model not in MODELS:
    raise ValueError(f"Unknown model {options.model!r}; allowed: {', '.join(MODELS)}.")
  if options.stage not in ("dense", "prune"):
    raise ValueError(f"Unknown stage {options.stage!r}; allowed: dense, prune.")
  config = trainer_config(seed=options.seed, num_epochs=10, log_every=10,
                          checkpoint_every=1000, max_to_keep=1, num_devices=1)
  config.data = data_config("mnist5k", seed=options.seed)

  config.model = ml_collections.ConfigDict(MODELS[options.model])
  config.optimizers = ml_collections.ConfigDict({"adam": {"name": "adam",
                                                          "learning_rate": 1e-3}})
  grid = GRID
  if options.smoke:
    config.num_epochs = 1
    config.data.train_subset = 256
    config.data.batch_size = 32
    config.model = ml_collections.ConfigDict(
        {"name": "mlp", "hidden": (16,)} if options.model == "mlp" else
        {"name": "cnn", "features": (2,)})
  if options.stage == "dense":
    return config

  # Fine-tuning: one epoch from the dense checkpoint, Adam with a smaller step.
  config.num_epochs = 1
  config.init_from = ml_collections.ConfigDict(
      {"workdir": f"runs/pruning/{options.model}_s{options.seed}/dense", "run": "adam"})
  config.pruning = ml_collections.ConfigDict({
      "damping": 1e-3, "q_family": "kronecker", "fit_steps": 150, "refine_steps": 10,
      "aux_learning_rate": 1e-3, "aux_batch_size": 128, "fisher_examples": 512})
  if options.smoke:
    config.pruning.update({"fit_steps": 5, "refine_steps": 2, "fisher_examples": 64,
                           "aux_batch_size": 16})
    grid = (("oneshot", "global", 0.9, (0.5, 0.9)), ("cubic", "layer", 0.9, ()))
  kinds = {"oneshot": {"schedule": "one_shot"},
           "cubic": {"schedule": "cubic", "num_steps": 3, "every": 10 if not options.smoke else 2}}
  runs = {}
  for schedule, ranking, sparsity, sweep in grid:
    for method in METHODS:
      runs[run_name(method, ranking, schedule, sparsity)] = {
          "name": "adam", "learning_rate": 3e-4,
          "pruning": {"method": method, "ranking": ranking, "sparsity": sparsity,
                      "sweep": sweep, **kinds[schedule]}}
  config.optimizers = ml_collections.ConfigDict(runs)
  return config
