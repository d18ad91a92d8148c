"""TreeMAML vs MAML on hierarchical sinusoid regression with a 1-40-40-1 ReLU MLP, one seed.

The runs and the evaluation of ``configs/treemaml_linear.py`` on sinusoid tasks (4 x 4 x 2 = 32
per batch, 10 support / 10 query points, amplitude and phase offsets down the tree):

  python -m gnrev.main --config=configs/treemaml_sinusoid.py:seed=0 \\
      --workdir=runs/treemaml_sinusoid/seed_0
  python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py \\
      --workdir=runs/treemaml_sinusoid --seeds=0,1
  # flat, non-hierarchical tasks:
  ... --config.task.family.hierarchical=False
  # second order (results tagged):
  ... --config.task.first_order=False --tag=_second_order
  # full protocol (MAML used 70k meta-iterations; ours is a short CPU run):
  ... --config.task.steps_per_epoch=20000 --seeds=0,1,2,3,4

Protocol (chosen for MAML on validation batches of tasks, keys from 20000, before running
TreeMAML): first-order, Adam 3e-3, 3000 meta-steps, 2 seeds. Validation query MSE of MAML after
3 steps (no adaptation ~3.9): 1000 steps at 1e-3 (the old default) 3.88; 3000 at 3e-3 1.78; 5000
at 3e-3 1.44; 3000 at 1e-2 2.53; second order 3000 at 3e-3 3.74 and at 1e-3 5.26 (unstable,
step-1 MSE 53); second order with inner lr 0.02 diverged (NaN). See experiments/README.md#treemaml.
The learned tree reuses the linear config's clustering constants (not tuned here). First-order
TreeMAML is unstable with a pooled first step (the init drifts to huge outputs); second-order
TreeMAML with the true tree trains well (validation 0.56), so the results also hold a
second-order run. The amplitude/phase ranges follow MAML's sinusoid; the tree constants are our
defaults (the paper's generator is unknown to us). Smoke run: ``:smoke``.
"""

from configs import treemaml_linear
from configs.common import parse_arg


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, seed=0)
  config = treemaml_linear.get_config(arg)
  family = config.task.family
  family.kind = "sinusoid"
  family.level_stds = (1.0, 0.5, 0.25)
  family.noise_std = 0.0
  family.num_support = 10
  family.branching = (4, 4, 2)
  config.task.model = "mlp"
  config.task.inner_lrs = (0.01, 0.01, 0.01)
  config.task.first_order = True
  if not options.smoke:
    config.task.steps_per_epoch = 3000
  for run in config.optimizers.values():
    run.learning_rate = 3e-3
  return config
