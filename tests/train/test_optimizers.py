"""Optimizer registry and the Fisher-vector product handed to FishLeg."""

import inspect
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import train
from gnrev.train import optimizers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.x64
def test_fisher_vector_product_matches_dense_softmax_fisher():
  model = train.MLP(num_classes=3, hidden=(4,))
  x = jax.random.normal(jax.random.key(0), (5, 2))
  params = jax.tree.map(lambda a: a.astype(jnp.float64),
                        model.init(jax.random.key(1), x)["params"])
  flat, unravel = ravel_pytree(params)
  jacobian = jax.jacfwd(lambda p: model.apply({"params": unravel(p)}, x))(flat)  # (n, c, P)
  probs = jax.nn.softmax(model.apply({"params": params}, x))
  hessians = jax.vmap(lambda p: jnp.diag(p) - jnp.outer(p, p))(probs)            # (n, c, c)
  fisher = jnp.einsum("ncp,ncd,ndq->pq", jacobian, hessians, jacobian) / x.shape[0]
  v = jax.random.normal(jax.random.key(2), flat.shape)
  fvp = train.fisher_vector_product(model, params, {}, x)
  np.testing.assert_allclose(ravel_pytree(fvp(unravel(v)))[0], fisher @ v, rtol=1e-10,
                             atol=1e-12)


def test_registered_optimizers_take_a_step_with_their_extra_args():
  model = train.MLP(num_classes=3, hidden=(4,))
  x = jnp.ones((2, 3))
  params = model.init(jax.random.key(0), x)["params"]
  for name in ("sgd", "adam"):
    setup = train.build_optimizer(ml_collections.ConfigDict({"name": name, "learning_rate": 0.1}),
                                  model, train.classification())
    grads = jax.tree.map(jnp.ones_like, params)
    extra = setup.extra_args(params, {}, (x, jnp.ones((2, 3))), jax.random.key(1))
    updates, _ = setup.tx.update(grads, setup.tx.init(params), params, **extra)
    assert all(jnp.all(u < 0) for u in jax.tree.leaves(updates))


def test_every_registered_optimizer_declares_its_options_and_they_reach_the_transform():
  assert set(train.OPTIMIZERS) == set(train.OPTIONS)
  model = train.MLP(num_classes=3, hidden=(4,))
  x = jnp.ones((2, 3))
  params = model.init(jax.random.key(0), x)["params"]
  grads = jax.tree.map(jnp.ones_like, params)
  # Adam's first step is -lr * g / (|g| + eps): eps = 1 halves it for unit gradients.
  config = ml_collections.ConfigDict({"name": "adam", "learning_rate": 0.1, "eps": 1.0})
  setup = train.build_optimizer(config, model, train.classification())
  updates, _ = setup.tx.update(grads, setup.tx.init(params), params)
  jax.tree.map(lambda u: np.testing.assert_allclose(u, -0.05, rtol=1e-5), updates)
  # SGD momentum 0.5: the second step of a constant gradient is 1.5 times the first.
  config = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.1, "momentum": 0.5})
  setup = train.build_optimizer(config, model, train.classification())
  state = setup.tx.init(params)
  for expected in (-0.1, -0.15):
    updates, state = setup.tx.update(grads, state, params)
    jax.tree.map(lambda u, e=expected: np.testing.assert_allclose(u, e, rtol=1e-6), updates)
  options = train.optimizer_options(ml_collections.ConfigDict(
      {"name": "fishleg", "learning_rate": 0.1, "q_family": "diagonal"}))
  assert options["q_family"] == "diagonal" and options["damping"] == 0.1


def test_unknown_optimizer_lists_the_registered_ones():
  with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'; allowed: adam, .*sgd"):
    train.build_optimizer(ml_collections.ConfigDict({"name": "lbfgs"}), train.MLP(num_classes=2),
                          train.classification())


def test_psgd_kron_entry_restates_psgdax_defaults_and_importing_gnrev_starts_no_backend():
  psgdax = pytest.importorskip("psgdax", reason="the optional peers extra is not installed")
  ours = inspect.signature(optimizers.psgd_kron).parameters
  theirs = inspect.signature(psgdax.kron).parameters
  for name, parameter in ours.items():
    assert theirs[name].default == parameter.default, name
  # psgdax's import creates a JAX array; gnrev's must not (jax.distributed.initialize after it).
  probe = ("import gnrev.main\nfrom jax._src import xla_bridge\n"
           "assert not xla_bridge.backends_are_initialized()\n")
  subprocess.run([sys.executable, "-c", probe], check=True, env={**os.environ, "PYTHONPATH": REPO})
