"""Trains a RevMLP with Adam on scikit-learn's bundled digits (offline) and reports accuracy.

A small end-to-end example of the nets API; the experiment launcher (``gnrev.main``) is the
full-featured way to train.

    python experiments/revmlp_digits.py --steps 300
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from gnrev import nets


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  args = parser.parse_args()

  digits = load_digits()
  x = (digits.data / 16.0 - 0.5).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(args.seed).permutation(len(x))
  x, y = x[order], y[order]
  x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

  model = nets.RevMLP(num_blocks=2, expansion=512, num_classes=10, init_std=1e-3)
  variables = model.init(jax.random.key(args.seed), x_train[:1])
  tx = optax.adam(args.learning_rate)
  opt_state = tx.init(variables["params"])

  def loss_fn(params, fixed, xb, yb):
    logits = model.apply({"params": params, "fixed": fixed}, xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  @jax.jit
  def step(params, opt_state, fixed, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(params, fixed, xb, yb)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, fixed = variables["params"], variables["fixed"]
  rng = np.random.default_rng(args.seed)
  for _ in range(args.steps):
    batch = rng.choice(len(x_train), 128, replace=False)
    params, opt_state, loss = step(params, opt_state, fixed, x_train[batch], y_train[batch])
  logits = model.apply({"params": params, "fixed": fixed}, x_test)
  accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
  print(json.dumps({"final_train_loss": float(loss), "test_accuracy": accuracy}))


if __name__ == "__main__":
  main()
