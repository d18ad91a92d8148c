"""FishLeg's ``kronecker_per_example`` Q family through the trainer's optimizer registry."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gnrev import optim, train
from tests.train.test_tasks import reconstruction_config

FAMILY = "kronecker_per_example"


@pytest.mark.x64
def test_extra_args_hold_per_example_terms_of_the_training_loss_on_the_batch():
  task = train.reconstruction("bernoulli")
  # Batch 2 against widths 16 and 8: the factored product is the cheaper one for every layer.
  model = train.Autoencoder(num_outputs=6, encoder_widths=(16,), code_size=8)
  x = jax.random.uniform(jax.random.key(0), (2, 3, 2, 1), jnp.float64)
  targets = x.reshape(2, -1)
  params = jax.tree.map(lambda a: a.astype(jnp.float64),
                        model.init(jax.random.key(1), x)["params"])
  setup = train.build_optimizer(ml_collections.ConfigDict(
      {"name": "fishleg", "learning_rate": 0.1, "q_family": FAMILY}), model, task)

  def terms_grads_and_update(p, use_terms):
    extra = setup.extra_args(p, {}, (x, targets), jax.random.key(2))
    per_example = extra.pop("per_example")
    grads = jax.grad(lambda q: task.loss(model.apply({"params": q}, x), targets))(p)
    updates, _ = setup.tx.update(grads, setup.tx.init(p), p, **extra,
                                 **({"per_example": per_example} if use_terms else {}))
    return per_example, grads, updates

  run = jax.jit(terms_grads_and_update, static_argnums=1)
  per_example, grads, updates = run(params, True)
  assert set(per_example) == {"Dense_0", "Dense_1", "Dense_2", "Dense_3"}
  assert optim.q_structure(params, FAMILY).per_example_blocks(per_example) == set(per_example)
  for name, terms in per_example.items():
    # X^T Delta and 1^T Delta are the gradient of the trained loss (sum over pixels, mean over
    # the batch) on this very batch.
    np.testing.assert_allclose(terms.inputs.T @ terms.output_grads, grads[name]["kernel"],
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(terms.output_grads.sum(0), grads[name]["bias"], rtol=1e-12,
                               atol=1e-15)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), updates,
               run(params, False)[2])


def test_a_config_run_trains_with_the_per_example_family(tmp_path):
  config = reconstruction_config(fishleg={
      "name": "fishleg", "learning_rate": 5e-4, "q_family": FAMILY})  # FishLeg at its defaults
  results = train.train_and_evaluate(config, str(tmp_path))
  start = next(r for r in train.read_metrics(str(tmp_path)) if r["step"] == 0)
  assert results["fishleg"]["test_loss"] < start["test_loss"]
