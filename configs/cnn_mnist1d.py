"""Optimizers on a non-reversible model: a small CNN on MNIST-1D (generated locally, offline).

Compares Adam and SGD with the curvature methods that apply to any model (``gauss_newton``, the
min-norm GN step of gnrev.gn, and ``fishleg`` from gnrev.optim), so that GN and FishLeg can be
compared outside reversible architectures.

Run (under a minute on 2 CPU cores):

  python -m gnrev.main --config=configs/cnn_mnist1d.py --workdir=runs/cnn_mnist1d

Smoke run (seconds): ``--config=configs/cnn_mnist1d.py:smoke``; an MLP instead of the CNN:
``--config.model.name=mlp`` is not enough (fields differ), use ``:mlp``.
"""

import ml_collections

from configs.common import data_config, parse_arg, shrink_for_smoke, trainer_config


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, mlp=False)
  config = trainer_config(seed=42, num_epochs=10, checkpoint_every=100)
  config.data = data_config("mnist1d", eval_batch_size=200)

  config.model = ml_collections.ConfigDict()
  if options.mlp:
    config.model.name = "mlp"
    config.model.hidden = (128, 128)
  else:
    config.model.name = "cnn"
    config.model.features = (16, 32)

  runs = {"adam": {"name": "adam", "learning_rate": 1e-3},
          "sgd": {"name": "sgd", "learning_rate": 0.05}}
  # Min-norm GN: identity-CE target (p - y), damped CG in the 1280-dim output space.
  runs["gauss_newton"] = {"name": "gauss_newton", "learning_rate": 0.1, "loss": "ce_identity",
                          "damping": 1e-3, "maxiter": 20}
  runs["fishleg"] = {"name": "fishleg", "learning_rate": 0.05, "damping": 0.5,
                     "aux_learning_rate": 1e-4, "init_scale": 1.0, "max_newton_steps": None}
  config.optimizers = ml_collections.ConfigDict(runs)
  return shrink_for_smoke(config) if options.smoke else config
