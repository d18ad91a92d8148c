"""FishLeg against Adam, SGD-momentum and its peers on the FishLeg paper's MNIST autoencoder.

Garcia et al. (ICLR 2023)'s network 784-1000-500-250-30-250-500-1000-784 (ReLU, linear 30-unit
code, pixel logits), Bernoulli NLL summed over the 784 pixels and averaged over examples
(task ``reconstruction``), on the 5,000 real MNIST digits of ``mnist5k`` (4,000 train / 1,000
test, pixels / 255 with ``normalise="unit"``), batch 100, 50 epochs = 2,000 steps, float32,
the same minibatch order for every run of a seed. FishLeg's Fisher products are exact GGN
products (= Fisher for the Bernoulli likelihood) on the training batch.

Runs (``config.optimizers``):

* ``fishleg``: ``optim.fishleg`` at its defaults (the official algorithm: learning rate 5e-4
  on a heavy-ball trace, ``Q_0 = I / damping``, damping 0.1, plain Adam on the factors at 1e-4,
  aux step every 10, momentum 0.9; plus the trust ratio, ``max_newton_steps=10``, and an aux
  step at each of the first 40 updates, ``aux_warmup_steps=40``); no per-init tuning;
* ``fishleg_per_example``: the same defaults with the cheaper Kronecker family
  ``q_family="kronecker_per_example"`` (no elementwise factor; its products use the batch's
  per-example layer inputs and output gradients);
* ``fishleg_official``: ``optim.fishleg_official`` (the official code's settings: lr 0.005 on
  an EMA momentum, ``Q_0 = I / damping``, damping 0.1);
* ``adam_1em4`` ... ``adam_3em3``: Adam at 1e-4, 3e-4, 1e-3, 3e-3, default betas;
* ``sgd_momentum``: 0.003, momentum 0.9;
* peers at one untuned, conventional rate each: ``sophia`` (``optax.contrib.sophia``, 1e-3,
  Hutchinson's Hessian diagonal of the batch loss), ``muon`` (``optax.contrib.muon``, 0.02) and
  ``psgd_kron`` (PSGD-Kron from ``psgdax``, 1e-3; needs ``pip install 'gnrev[peers]'``).

Run them (one seed, flax's default init) through the launcher:

  python -m gnrev.main --config=configs/fishleg_autoencoder.py --workdir=runs/fishleg_autoencoder

Config arguments: ``seed=N`` (init and batch order), ``init=pytorch`` (PyTorch's default
``nn.Linear`` init instead of flax's ``Dense`` default: the official run's),
``runs=fishleg+adam_1em3`` (a subset, ``+``-separated), ``validation=0.2`` (that fraction of
the training digits held out as a validation split, evaluated as ``val_loss``: for choosing
settings without the test set),
``smoke`` (seconds: the 64-32-16 network on 128 digits). The comparison over both inits, with
curves against steps and wall-clock, is ``experiments/fishleg_autoencoder.py``:

  nice -n 10 python experiments/fishleg_autoencoder.py --seeds=0 --results

Wall-clock on 2 shared CPU cores (Dec 2026): FishLeg ~15 minutes and Adam ~3 per 2,000-step run
on an idle machine. Results and verdict: experiments/README.md.
"""

import ml_collections

from configs.common import data_config, parse_arg, select_runs, shrink_for_smoke, trainer_config

ADAM_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
INITS = ("flax", "pytorch")


def all_runs() -> dict:
  runs = {"fishleg": {"name": "fishleg", "learning_rate": 5e-4},
          "fishleg_per_example": {"name": "fishleg", "learning_rate": 5e-4,
                                  "q_family": "kronecker_per_example"},
          "fishleg_official": {"name": "fishleg_official", "learning_rate": 0.005}}
  for rate in ADAM_RATES:
    # Config keys cannot hold dots or dashes: 3e-4 -> "adam_3em4".
    runs["adam_" + f"{rate:.0e}".replace("e-0", "em")] = {"name": "adam", "learning_rate": rate}
  runs["sgd_momentum"] = {"name": "sgd", "learning_rate": 0.003, "momentum": 0.9}
  runs["sophia"] = {"name": "sophia", "learning_rate": 1e-3}
  runs["muon"] = {"name": "muon", "learning_rate": 0.02}
  runs["psgd_kron"] = {"name": "psgd_kron", "learning_rate": 1e-3}
  return runs


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, seed=0, runs="", init="flax", validation=0.0)
  if options.init not in INITS:
    raise ValueError(f"Unknown init {options.init!r}; allowed: {', '.join(INITS)}.")
  # 4,000 / 100 = 40 steps per epoch: 50 epochs are 2,000 steps.
  config = trainer_config(seed=options.seed, num_epochs=50, eval_every=100, log_every=10,
                          checkpoint_every=500, max_to_keep=1)
  config.task = ml_collections.ConfigDict({"name": "reconstruction", "likelihood": "bernoulli"})
  config.data = data_config("mnist5k", batch_size=100, seed=options.seed)
  config.data.options = ml_collections.ConfigDict({"normalise": "unit", "seed": 0})
  config.data.validation_fraction = options.validation
  config.data.validation_seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "autoencoder"
  config.model.encoder_widths = (1000, 500, 250)
  config.model.code_size = 30
  config.model.param_init = options.init

  runs = select_runs(all_runs(), options.runs)
  config.optimizers = ml_collections.ConfigDict(runs)
  if options.smoke:
    shrink_for_smoke(config)
    config.model.encoder_widths = (64, 32)
    config.model.code_size = 16
    config.eval_every = 2
  return config
