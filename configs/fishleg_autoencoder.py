"""FishLeg vs Adam vs SGD-momentum on a deep autoencoder (Garcia et al. 2023, benchmark shape).

Encoder-decoder ReLU MLP with a linear 30-unit code and Bernoulli likelihood on pixels in
[0, 1]. Offline default: scikit-learn's 8x8 digits (64-128-64-30-64-128-64, 1400 train /
397 test images). When ``data_dir`` holds the MNIST IDX files (``train-images-idx3-ubyte`` and
``t10k-images-idx3-ubyte``, optionally ``.gz``) it uses MNIST (784 inputs; set
``encoder_widths=(1000, 500, 250)`` for the paper's network).

Run (under a minute on 2 CPU cores for 3 seeds x 3 optimizers):

  python experiments/fishleg_autoencoder.py --config=configs/fishleg_autoencoder.py \
      --workdir=/tmp/fishleg_ae

Smoke run: append ``--config.num_steps=100 --config.eval_every=50 --config.seeds=0,``.
Outputs in ``<workdir>/out``: ``fishleg_autoencoder.json`` (curves + summary) and
``fishleg_autoencoder.png`` (train/test loss vs steps and vs wall-clock).

Learning rates were picked on seed 0, 2000 steps, from a small grid per optimizer: Adam
{3e-4, 1e-3, 3e-3}, SGD-momentum {0.01, 0.03, 0.1}, FishLeg lr {0.01, 0.03} x damping
{0.1, 1} x aux lr {1e-3, 1e-2}. Adam uses Goldfarb et al.'s autoencoder settings (beta2 0.9,
eps 1e-4) as in the paper. Results summary: ``experiments/results/fishleg_autoencoder_summary.json``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.data_dir = ""
  config.encoder_widths = (128, 64)
  config.code_size = 30
  config.batch_size = 100
  config.aux_batch_size = 100
  config.num_steps = 2000
  config.eval_every = 100
  config.seeds = (0, 1, 2)

  config.fishleg = ml_collections.ConfigDict()
  config.fishleg.learning_rate = 0.03
  config.fishleg.init_scale = 1.0
  config.fishleg.damping = 0.1
  config.fishleg.aux_learning_rate = 1e-3
  config.fishleg.update_aux_every = 10
  config.fishleg.momentum = 0.9
  config.fishleg.weight_decay = 1e-5

  config.adam = ml_collections.ConfigDict()
  config.adam.learning_rate = 3e-3
  config.adam.b2 = 0.9
  config.adam.eps = 1e-4

  config.sgd = ml_collections.ConfigDict()
  config.sgd.learning_rate = 0.03
  config.sgd.momentum = 0.9
  return config
