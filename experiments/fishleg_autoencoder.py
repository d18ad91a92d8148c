"""FishLeg vs Adam vs SGD-momentum on a deep autoencoder: train/test NLL vs steps and wall-clock.

Config and runbook: ``configs/fishleg_autoencoder.py``. Writes ``<workdir>/out/`` with a JSON of
all curves plus a summary (does FishLeg reach Adam's final training loss in fewer steps and in
less time?) and a PNG. Timing covers the jitted training steps only (evaluation excluded).
"""

from __future__ import annotations

import gzip
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from gnrev import curvature, optim

LIKELIHOOD = curvature.bernoulli()


class Autoencoder(nn.Module):
  """ReLU encoder -> linear code -> ReLU decoder -> pixel logits (Hinton & Salakhutdinov shape)."""
  encoder_widths: tuple[int, ...]
  code_size: int
  num_pixels: int

  @nn.compact
  def __call__(self, x):
    for width in self.encoder_widths:
      x = nn.relu(nn.Dense(width)(x))
    x = nn.Dense(self.code_size)(x)
    for width in reversed(self.encoder_widths):
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_pixels)(x)


def _read_idx_images(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
  return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows * cols) / 255.0


def load_pixels(data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
  """(train, test) pixel arrays in [0, 1]: MNIST from ``data_dir`` if present, else digits."""
  for suffix in ("", ".gz"):
    train = os.path.join(data_dir, "train-images-idx3-ubyte" + suffix)
    test = os.path.join(data_dir, "t10k-images-idx3-ubyte" + suffix)
    if data_dir and os.path.exists(train) and os.path.exists(test):
      return (_read_idx_images(train).astype(np.float32),
              _read_idx_images(test).astype(np.float32))
  from sklearn.datasets import load_digits
  pixels = (load_digits().data / 16.0).astype(np.float32)
  order = np.random.default_rng(0).permutation(len(pixels))
  return pixels[order[:1400]], pixels[order[1400:]]


def make_optimizer(name: str, config) -> optax.GradientTransformation:
  if name == "fishleg":
    return optim.fishleg(**config.fishleg)
  if name == "adam":
    return optax.adam(config.adam.learning_rate, b2=config.adam.b2, eps=config.adam.eps)
  if name == "sgd_momentum":
    return optax.sgd(config.sgd.learning_rate, momentum=config.sgd.momentum)
  raise ValueError(f"Unknown optimizer {name!r}; allowed: fishleg, adam, sgd_momentum.")


def make_train_chunk(model: Autoencoder, tx: optax.GradientTransformation, uses_fisher: bool):
  """Jitted ``(params, opt_state, pixels, batch_idx, aux_idx, keys) -> (params, opt_state)``.

  Runs ``len(batch_idx)`` steps under ``lax.scan``; FishLeg gets the exact GGN (= Fisher for
  the Bernoulli likelihood) on a separate auxiliary batch.
  """

  def step(carry, inputs):
    params, opt_state, pixels = carry
    idx, aux_idx, key = inputs
    x = pixels[idx]
    grads = jax.grad(lambda p: LIKELIHOOD.nll(model.apply({"params": p}, x), x))(params)
    extra = {}
    if uses_fisher:
      apply_fn = lambda p, xb: model.apply({"params": p}, xb)
      # Linearised inside fvp_fn, so the aux batch's forward pass runs only on aux steps.
      extra = {"fvp_fn": lambda v: curvature.ggn_vector_product(
          apply_fn, params, pixels[aux_idx], LIKELIHOOD)(v), "rng": key}
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return (optax.apply_updates(params, updates), opt_state, pixels), None

  @jax.jit
  def chunk(params, opt_state, pixels, batch_idx, aux_idx, keys):
    (params, opt_state, _), _ = jax.lax.scan(step, (params, opt_state, pixels),
                                             (batch_idx, aux_idx, keys))
    return params, opt_state

  return chunk


def run_one(name: str, seed: int, config, train: np.ndarray, test: np.ndarray) -> dict:
  model = Autoencoder(tuple(config.encoder_widths), config.code_size, train.shape[1])
  params = model.init(jax.random.key(seed), train[:1])["params"]
  tx = make_optimizer(name, config)
  opt_state = tx.init(params)
  chunk = make_train_chunk(model, tx, uses_fisher=name == "fishleg")
  evaluate = jax.jit(lambda p, x: LIKELIHOOD.nll(model.apply({"params": p}, x), x))
  rng = np.random.default_rng(seed)
  keys = jax.random.split(jax.random.key(seed + 1000), config.num_steps)
  n = config.eval_every
  draw = lambda size: rng.integers(0, len(train), (n, size)).astype(np.int32)
  # Compile outside the clock.
  jax.block_until_ready(chunk(params, opt_state, train, draw(config.batch_size),
                              draw(config.aux_batch_size), keys[:n]))
  curve = {"step": [0], "time": [0.0], "train_loss": [float(evaluate(params, train))],
           "test_loss": [float(evaluate(params, test))]}
  elapsed = 0.0
  for start in range(0, config.num_steps, n):
    batch_idx, aux_idx = draw(config.batch_size), draw(config.aux_batch_size)
    tic = time.perf_counter()
    params, opt_state = jax.block_until_ready(
        chunk(params, opt_state, train, batch_idx, aux_idx, keys[start:start + n]))
    elapsed += time.perf_counter() - tic
    curve["step"].append(start + n)
    curve["time"].append(elapsed)
    curve["train_loss"].append(float(evaluate(params, train)))
    curve["test_loss"].append(float(evaluate(params, test)))
  return curve


def first_reaching(curve_steps, curve_times, losses, target):
  hits = np.nonzero(np.asarray(losses) <= target)[0]
  if not len(hits):
    return None, None
  return int(curve_steps[hits[0]]), float(curve_times[hits[0]])


def summarise(results: dict) -> dict:
  """Mean curves over seeds; when FishLeg first reaches Adam's final (mean) training loss."""
  mean = {name: {key: np.mean([run[key] for run in runs], axis=0)
                 for key in ("step", "time", "train_loss", "test_loss")}
          for name, runs in results.items()}
  target = float(mean["adam"]["train_loss"][-1])
  summary = {"adam_final_train_loss": target,
             "adam_total_time_s": float(mean["adam"]["time"][-1]),
             "adam_num_steps": int(mean["adam"]["step"][-1])}
  for name, curves in mean.items():
    steps, seconds = first_reaching(curves["step"], curves["time"], curves["train_loss"], target)
    summary[name] = {"final_train_loss": float(curves["train_loss"][-1]),
                     "final_test_loss": float(curves["test_loss"][-1]),
                     "total_time_s": float(curves["time"][-1]),
                     "steps_to_adam_final_train_loss": steps,
                     "time_to_adam_final_train_loss_s": seconds}
  fishleg = summary["fishleg"]
  summary["fishleg_reaches_adam_final_in_fewer_steps"] = (
      fishleg["steps_to_adam_final_train_loss"] is not None
      and fishleg["steps_to_adam_final_train_loss"] < summary["adam_num_steps"])
  summary["fishleg_reaches_adam_final_in_less_time"] = (
      fishleg["time_to_adam_final_train_loss_s"] is not None
      and fishleg["time_to_adam_final_train_loss_s"] < summary["adam_total_time_s"])
  return summary


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  for color, (name, runs) in enumerate(results.items()):
    for x_key, ax in zip(("step", "time"), axes):
      for i, run in enumerate(runs):
        kwargs = {"label": name} if i == 0 else {}
        ax.plot(run[x_key], run["train_loss"], color=f"C{color}", alpha=0.8, lw=1, **kwargs)
        ax.plot(run[x_key], run["test_loss"], color=f"C{color}", ls="--", alpha=0.6, lw=1)
  for ax, xlabel in zip(axes, ("step", "wall-clock (s, training only)")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NLL (solid train, dashed test)")
    ax.set_yscale("log")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=80)


def train_and_compare(config, workdir: str) -> dict:
  train, test = load_pixels(config.data_dir)
  results = {name: [run_one(name, seed, config, train, test) for seed in config.seeds]
             for name in ("fishleg", "adam", "sgd_momentum")}
  out = os.path.join(workdir, "out")
  os.makedirs(out, exist_ok=True)
  summary = summarise(results)
  with open(os.path.join(out, "fishleg_autoencoder.json"), "w") as f:
    json.dump({"config": config.to_dict(), "summary": summary, "curves": results}, f,
              default=list)
  plot(results, os.path.join(out, "fishleg_autoencoder.png"))
  return summary


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to configs/fishleg_autoencoder.py.")
flags.DEFINE_string("workdir", "/tmp/fishleg_autoencoder", "Where out/ is written.")


def main(argv):
  del argv
  print(json.dumps(train_and_compare(FLAGS.config, FLAGS.workdir), indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
