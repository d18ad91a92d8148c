"""TreeMAML vs MAML on hierarchical sinusoid regression with a 1-40-40-1 ReLU MLP (notes 3.3).

Runbook:
    python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py
    # flat, non-hierarchical tasks:
    python experiments/treemaml_synthetic.py --config=configs/treemaml_sinusoid.py \\
        --config.task.hierarchical=False
    # full protocol (MAML used 70k meta-iterations; ours is a short CPU run):
    ... --config.meta_steps=20000 --config.seeds=0,1,2,3,4

At this default (1000 first-order meta-steps, a CPU smoke budget) the MLP is under-trained and
no method beats "no adaptation" by much; inner step sizes 0.02-0.05 diverged in our short
trials. A faithful run needs MAML-scale training (tens of thousands of meta-steps).

The paper's generator and constants are unknown to us (notes section 3.2, TO-FILL); the
amplitude/phase ranges follow MAML's sinusoid, the tree constants are our defaults.
"""

import importlib.util
import pathlib


def _linear_config():
  path = pathlib.Path(__file__).with_name("treemaml_linear.py")
  spec = importlib.util.spec_from_file_location("treemaml_linear", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _linear_config()
  config.task.kind = "sinusoid"
  config.task.level_stds = (1.0, 0.5, 0.25)
  config.task.noise_std = 0.0
  config.task.num_support = 10
  config.task.branching = (4, 4, 2)
  config.model = "mlp"
  config.inner_lrs = (0.01, 0.01, 0.01)
  config.first_order = True
  config.outer_lr = 1e-3
  config.meta_steps = 1000
  return config
