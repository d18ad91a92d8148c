"""GN vs Adam vs SGD on a RevMLP, scikit-learn's bundled digits (the README's main job).

Reproduces, at laptop scale, the paper's mini-batch comparison (Buffelli et al. 2024, Fig. 2-3;
docs/gn.md, "Experimental protocol"): the same RevMLP (2 coupling blocks, fixed random
expansion, fixed orthonormal head, W ~ N(0, 1e-3^2)) trained by each optimizer from the same
init on the same batches, logging train/test loss and accuracy and the % loss change on the
same batch.

Run (about 15 s for all three optimizers on 2 CPU cores, compilation included):

  python -m gnrev.main --config=configs/default.py --workdir=runs/default

Smoke run (seconds): ``--config=configs/default.py:smoke``. Overrides, e.g.
``--config.num_epochs=50 --config.optimizers.adam.learning_rate=1e-4``. Every optimizer of the
launcher (adds the min-norm ``gauss_newton`` and ``fishleg``, whose Jacobian-vector products need
``memory_mode="autodiff"``): ``--config=configs/default.py:all`` (or ``:smoke,all``); a subset:
``:all,runs=adam+fishleg`` (``+``-separated run names).
Artefacts in the workdir: config.json, metrics.jsonl, curves.png, <run>/checkpoints/.
"""

import ml_collections

from configs.common import data_config, parse_arg, select_runs, shrink_for_smoke, trainer_config


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, all=False, runs="")
  # Fields of the trainer and the data: configs/common.py says what each means.
  config = trainer_config(seed=42, num_epochs=20, checkpoint_every=50)
  config.data = data_config("digits", eval_batch_size=360)

  config.model = ml_collections.ConfigDict()
  config.model.name = "revmlp"
  config.model.num_blocks = 2
  config.model.expansion = 1024
  config.model.linear_first_block = True
  config.model.init_std = 1e-3
  config.model.memory_mode = "invert"

  # exact_gn as in the paper's code: identity-CE rule, every block realises the whole target,
  # truncated SVD pseudo-inverse (rtol 1e-2, atol 1e-5). The SVD solver is needed here because
  # the linear first block's feature matrix has rank <= d/2 + 1 = 33 < batch_size.
  config.optimizers = ml_collections.ConfigDict({
      "exact_gn": {"name": "exact_gn", "learning_rate": 0.1, "loss": "ce_identity",
                   "allocation": "full", "solver": "svd", "rtol": 1e-2, "atol": 1e-5},
      "adam": {"name": "adam", "learning_rate": 1e-3},
      "sgd": {"name": "sgd", "learning_rate": 0.1},
  })
  if options.all:
    config.model.memory_mode = "autodiff"
    # Damped enough for conjugate gradients to converge (tol 1e-6) in ~60 iterations: a
    # truncated solve would make the step depend on float32 rounding, e.g. on how many devices
    # sum the batch.
    config.optimizers.gauss_newton = {"name": "gauss_newton", "learning_rate": 1.0,
                                      "loss": "ce_identity", "damping": 10.0}
    config.optimizers.fishleg = {"name": "fishleg", "learning_rate": 0.05, "damping": 0.5,
                                 "aux_learning_rate": 1e-4, "update_aux_every": 2,
                                 "init_scale": 1.0, "max_newton_steps": None}
  config.optimizers = ml_collections.ConfigDict(select_runs(config.optimizers.to_dict(),
                                                            options.runs))
  return shrink_for_smoke(config) if options.smoke else config
