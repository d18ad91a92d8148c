"""FishLeg vs Adam vs SGD-momentum on the FishLeg paper's MNIST autoencoder, real digits.

Garcia et al. (ICLR 2023)'s network 784-1000-500-250-30-250-500-1000-784 (ReLU, linear 30-unit
code, pixel logits), Bernoulli NLL summed over the 784 pixels and averaged over examples
(task ``reconstruction``), on the 5,000 real MNIST digits of ``mnist5k`` (4,000 train / 1,000
test, pixels / 255 with ``normalise="unit"``), batch 100, 50 epochs = 2,000 steps, float32.
FishLeg's Fisher products are exact GGN products (= Fisher for the Bernoulli likelihood) on the
training batch.

Runs (``config.optimizers``): ``fishleg`` at its documented defaults with learning rate 0.01
and the SGD warm start ``init_scale = 0.3`` (first steps = SGD-momentum at 0.003, the rate that
is stable on this loss), ``adam_3em4``, ``adam_1em3``, ``adam_3em3`` (Goldfarb et al.'s
autoencoder settings b2 0.9, eps 1e-4, as in the paper) and ``sgd_momentum`` (0.003, 0.9).

Run all five (one seed) through the launcher:

  python -m gnrev.main --config=configs/fishleg_autoencoder.py --workdir=runs/fishleg_autoencoder

Config arguments: ``seed=N`` (init and batch order), ``runs=fishleg+adam_1em3`` (a subset,
``+``-separated), ``smoke`` (seconds: the 64-32-16 network on 128 digits). The 3-seed comparison
with curves against steps and wall-clock is ``experiments/fishleg_autoencoder.py``, which runs
this config once per seed and run:

  nice -n 10 python experiments/fishleg_autoencoder.py --seeds=0,1,2 --results

Wall-clock on 2 CPU cores (Dec 2026): FishLeg ~3 steps/s and Adam ~17 on an idle machine, about
15 and 3 minutes per 2,000-step run; the 3-seed comparison took 80 minutes. Results and verdict:
experiments/README.md.
"""

import ml_collections

from configs.common import data_config, parse_arg, select_runs, shrink_for_smoke, trainer_config

ADAM_RATES = (3e-4, 1e-3, 3e-3)


def all_runs() -> dict:
  runs = {"fishleg": {"name": "fishleg", "learning_rate": 0.01, "init_scale": 0.3,
                      "weight_decay": 1e-5}}
  for rate in ADAM_RATES:
    # Config keys cannot hold dots or dashes: 3e-4 -> "adam_3em4".
    name = "adam_" + f"{rate:.0e}".replace("e-0", "em")
    runs[name] = {"name": "adam", "learning_rate": rate, "b2": 0.9, "eps": 1e-4}
  runs["sgd_momentum"] = {"name": "sgd", "learning_rate": 0.003, "momentum": 0.9}
  return runs


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, seed=0, runs="")
  # 4,000 / 100 = 40 steps per epoch: 50 epochs are 2,000 steps.
  config = trainer_config(seed=options.seed, num_epochs=50, eval_every=100, log_every=10,
                          checkpoint_every=500, max_to_keep=1)
  config.task = ml_collections.ConfigDict({"name": "reconstruction", "likelihood": "bernoulli"})
  config.data = data_config("mnist5k", batch_size=100, seed=options.seed)
  config.data.options = ml_collections.ConfigDict({"normalise": "unit", "seed": 0})

  config.model = ml_collections.ConfigDict()
  config.model.name = "autoencoder"
  config.model.encoder_widths = (1000, 500, 250)
  config.model.code_size = 30

  runs = select_runs(all_runs(), options.runs)
  config.optimizers = ml_collections.ConfigDict(runs)
  if options.smoke:
    shrink_for_smoke(config)
    config.model.encoder_widths = (64, 32)
    config.model.code_size = 16
    config.eval_every = 2
  return config
