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

from gnrev.train import parse_arg, select_runs, shrink_for_smoke

LAUNCHER = True


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, all=False, runs="")
  config = ml_collections.ConfigDict()
  config.seed = 42
  config.num_epochs = 20
  config.eval_every = 0            # steps between test evaluations; 0: once per epoch
  config.log_every = 1             # steps between per-step metric records
  config.checkpoint_every = 50
  config.max_to_keep = 2
  config.num_devices = 0           # devices of the data-parallel mesh; 0: all

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"
  config.data.data_dir = ""        # file-backed datasets; empty: $GNREV_DATA_DIR
  config.data.batch_size = 128
  config.data.eval_batch_size = 360
  config.data.train_subset = 0     # > 0: train on the first N examples only (paper's full batch)
  config.data.seed = 0             # shuffling

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
