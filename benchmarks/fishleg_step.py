"""Amortised FishLeg step time over Adam step time on the digits deep autoencoder.

Both optimizers run the same jitted ``lax.scan`` of training steps (batch 100; FishLeg with its
exact-GGN aux step every ``update_aux_every`` steps on a separate batch of 100), timed in one run
after compilation; the ratio of median chunk times is the amortised per-step cost. Target <= 1.5.

    python -m benchmarks.fishleg_step            # from the repository root
"""

import json
import statistics
import time

import jax
import numpy as np

from configs.fishleg_autoencoder import get_config
from experiments.fishleg_autoencoder import (Autoencoder, load_pixels, make_optimizer,
                                             make_train_chunk)

STEPS_PER_CHUNK = 200
REPEATS = 7


def median_chunk_seconds(name: str, config, train: np.ndarray) -> float:
  model = Autoencoder(tuple(config.encoder_widths), config.code_size, train.shape[1])
  params = model.init(jax.random.key(0), train[:1])["params"]
  tx = make_optimizer(name, config)
  opt_state = tx.init(params)
  chunk = make_train_chunk(model, tx, uses_fisher=name == "fishleg")
  rng = np.random.default_rng(0)
  keys = jax.random.split(jax.random.key(1), STEPS_PER_CHUNK)
  draw = lambda: rng.integers(0, len(train), (STEPS_PER_CHUNK, config.batch_size)).astype(np.int32)
  jax.block_until_ready(chunk(params, opt_state, train, draw(), draw(), keys))
  times = []
  for _ in range(REPEATS):
    batch_idx, aux_idx = draw(), draw()
    tic = time.perf_counter()
    params, opt_state = jax.block_until_ready(
        chunk(params, opt_state, train, batch_idx, aux_idx, keys))
    times.append(time.perf_counter() - tic)
  return statistics.median(times)


def main():
  config = get_config()
  train, _ = load_pixels(config.data_dir)
  adam = median_chunk_seconds("adam", config, train)
  fishleg = median_chunk_seconds("fishleg", config, train)
  print(json.dumps({
      "benchmark": "fishleg_step", "device": jax.devices()[0].platform,
      "update_aux_every": config.fishleg.update_aux_every, "batch_size": config.batch_size,
      "adam_step_ms": 1e3 * adam / STEPS_PER_CHUNK,
      "fishleg_step_ms": 1e3 * fishleg / STEPS_PER_CHUNK,
      "fishleg_over_adam": fishleg / adam, "target": 1.5,
  }))


if __name__ == "__main__":
  main()
