"""Reference tests for the ``"kronecker_per_example"`` Q family and its per-example product."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gnrev import curvature, optim
from gnrev.optim.q_blocks import KroneckerBlock

FAMILY = "kronecker_per_example"
LIKELIHOOD = curvature.bernoulli()


class _Encoder(nn.Module):
  """A nested module: block names are module paths ("Encoder/Dense_0")."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, use_bias=False)(jnp.tanh(nn.Dense(16)(x)))


class _TinyNet(nn.Module):
  """Dense layers with and without bias, nested, one applied over positions ``(B, T, in)``."""

  @nn.compact
  def __call__(self, x):
    h = _Encoder(name="Encoder")(x)                          # (B, 5) -> (B, 16) -> (B, 3)
    per_position = nn.Dense(2)(h.reshape(h.shape[0], 3, 1))  # (B, 3, 1) -> (B, 3, 2)
    return nn.Dense(5)(jnp.tanh(per_position.reshape(h.shape[0], -1)))


def _tiny_problem(batch=2):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.uniform(keys[0], (batch, 5))
  params = _TinyNet().init(keys[1], x)["params"]
  params = jax.tree.map(lambda p: p.astype(jnp.result_type(float)), params)
  return _TinyNet(), params, x.astype(params["Dense_1"]["kernel"].dtype)


def _loss_fn(x):
  """Bernoulli NLL summed over outputs, mean over the batch: the trainer's reconstruction loss."""
  return lambda outputs: LIKELIHOOD.nll(outputs, x)


def _value_grad_and_per_example(model, params, x, targets):
  """The helper, jitted (the model and loss are closed over, the arrays are arguments)."""
  return jax.jit(lambda p, xb, t: optim.value_grad_and_per_example(model, p, xb, _loss_fn(t)))(
      params, x, targets)


def _random_lam(structure, key):
  lam = {}
  for block in structure.blocks:
    key, sub = jax.random.split(key)
    lam[block.name] = {k: jax.random.normal(jax.random.fold_in(sub, i), f.shape)
                       for i, (k, f) in enumerate(sorted(block.factors_for_diagonal(
                           jnp.ones(block.shape)).items()))}
  return lam


@pytest.mark.x64
@pytest.mark.parametrize("block", [KroneckerBlock("dense", 0, 1, (3, 2), elementwise=False),
                                   KroneckerBlock("no_bias", 0, None, (4, 3), elementwise=False),
                                   KroneckerBlock("conv", 0, 1, (2, 2, 2, 3), elementwise=False)],
                         ids=lambda b: b.name)
def test_block_without_elementwise_factor_is_the_dense_kronecker_product(block):
  factors = _random_lam(optim.QStructure(None, (block,)), jax.random.key(1))[block.name]
  assert set(factors) == {"L", "R"}
  dense = jnp.kron(factors["L"] @ factors["L"].T, factors["R"].T @ factors["R"])
  u = jax.random.normal(jax.random.key(2), block.shape)
  expected = dense @ u.reshape(-1)
  np.testing.assert_allclose(block.q_product(factors, u).reshape(-1), expected, rtol=1e-10)
  cached = block.cached_product(factors, block.product_cache(factors), u)
  np.testing.assert_allclose(cached.reshape(-1), expected, rtol=1e-10)
  np.testing.assert_allclose(block.diagonal(factors).reshape(-1), jnp.diag(dense), rtol=1e-12)
  assert jnp.linalg.eigvalsh(dense).min() > -1e-10 * jnp.abs(dense).max()


@pytest.mark.x64
def test_factors_for_a_separable_diagonal_are_exact():
  block = KroneckerBlock("dense", 0, 1, (3, 4), elementwise=False)
  rows, cols = jnp.array([0.5, 1.0, 2.0, 3.0]), jnp.array([0.1, 0.2, 0.4, 0.8])
  target = rows[:, None] * cols[None, :]
  np.testing.assert_allclose(block.diagonal(block.factors_for_diagonal(target)), target,
                             rtol=1e-12)
  scaled_identity = block.factors_for_diagonal(jnp.full(block.shape, 0.3))
  u = jax.random.normal(jax.random.key(0), block.shape)
  np.testing.assert_allclose(block.q_product(scaled_identity, u), 0.3 * u, rtol=1e-12)


@pytest.mark.x64
def test_per_example_terms_give_the_loss_gradient_exactly():
  model, params, x = _tiny_problem()
  loss, grads, per_example = _value_grad_and_per_example(model, params, x, x)
  expected_loss, expected_grads = jax.jit(jax.value_and_grad(
      lambda p: _loss_fn(x)(model.apply({"params": p}, x))))(params)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-14)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), grads,
               expected_grads)
  assert set(per_example) == {"Encoder/Dense_0", "Encoder/Dense_1", "Dense_0", "Dense_1"}
  assert per_example["Dense_0"].inputs.shape == (3 * x.shape[0], 1)  # positions are rows
  structure = optim.q_structure(params, FAMILY)
  leaves = structure.treedef.flatten_up_to(grads)
  for block in structure.blocks:
    terms = per_example[block.name]
    inputs = terms.inputs
    if block.bias_index is not None:
      inputs = jnp.concatenate([inputs, jnp.ones((len(inputs), 1))], axis=1)
    # X^T Delta is the gradient of the batch-mean loss itself (the 1/B is inside Delta).
    np.testing.assert_allclose(inputs.T @ terms.output_grads, block.gather(leaves),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.x64
def test_per_example_product_equals_materialised_q_applied_to_the_gradient():
  model, params, x = _tiny_problem()
  _, grads, per_example = _value_grad_and_per_example(model, params, x, x)
  structure = optim.q_structure(params, FAMILY)
  # Batch 2: the factored product is the cheaper one, except for the Dense over positions
  # (6 rows of a 2 x 2 block).
  assert structure.per_example_blocks(per_example) == {"Encoder/Dense_0", "Encoder/Dense_1",
                                                       "Dense_1"}
  lam = _random_lam(structure, jax.random.key(3))
  cache = structure.product_cache(lam)
  flat_grads, unravel = ravel_pytree(grads)
  dense_q = jax.jit(jax.jacfwd(lambda f: ravel_pytree(structure.q_vector(lam, unravel(f)))[0]))(
      flat_grads)
  np.testing.assert_allclose(dense_q, dense_q.T, atol=1e-10)
  expected = unravel(dense_q @ flat_grads)
  product = jax.jit(lambda v, terms: structure.q_vector_cached(lam, cache, v, terms))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
  jax.tree.map(close, product(grads, per_example), expected)
  jax.tree.map(close, product(grads, None), expected)
  # The factored blocks use X and Delta only, not their part of v: on v = 0 they still give Q g.
  from_terms_only = product(jax.tree.map(jnp.zeros_like, grads), per_example)
  for name in ("Encoder", "Dense_1"):
    jax.tree.map(close, from_terms_only[name], expected[name])
  jax.tree.map(lambda a: np.testing.assert_array_equal(a, 0.0), from_terms_only["Dense_0"])


@pytest.mark.x64
@pytest.mark.parametrize("precondition", [True, False])
def test_factored_aux_gradient_equals_autodiff_through_the_factors(precondition):
  """The aux step's lam-gradient with the probe in factored form (X, Delta), every block's
  ``y = Q r`` never formed, against autodiff through the factors and the dense Fisher."""
  from gnrev.optim.fishleg import _aux_loss_and_gradient_cached
  model, params, x = _tiny_problem()
  _, grads, per_example = _value_grad_and_per_example(model, params, x, x)
  structure = optim.q_structure(params, FAMILY)
  lam = _random_lam(structure, jax.random.key(3))
  cache = structure.product_cache(lam)
  flat, unravel = ravel_pytree(params)
  apply_flat = lambda f: model.apply({"params": unravel(f)}, x).reshape(-1)
  jac = jax.jacfwd(apply_flat)(flat)                       # materialised Jacobian
  probs = jax.nn.sigmoid(apply_flat(flat))
  fisher = jac.T @ ((probs * (1 - probs) / x.shape[0])[:, None] * jac)  # Bernoulli GGN, batch mean
  fvp = lambda v: unravel(fisher @ ravel_pytree(v)[0])
  residual = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), params)
  # The block-level vjp with y = Q r (or r): the usable blocks take the factored route.
  y = structure.q_vector(lam, residual) if precondition else residual
  (expected,) = jax.vjp(lambda l: structure.q_vector(l, grads), lam)[1](y)
  got = structure.q_vector_vjp_cached(lam, cache, grads, residual, precondition, per_example)
  assert structure.per_example_blocks(per_example) == {"Encoder/Dense_0", "Encoder/Dense_1",
                                                       "Dense_1"}
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  jax.tree.map(close, got, expected)
  # The whole aux step (trust ratio on and off), factored vs autodiff through the factors.
  for trust_ratio in (None, 1e-3):
    factored = _aux_loss_and_gradient_cached(structure, lam, cache, jnp.float64(0.7), grads,
                                             fvp, 0.1, precondition, trust_ratio, per_example)
    scale = factored[2]
    scaled_q = lambda l, v, c=scale: jax.tree.map(lambda a: c * a, structure.q_vector(l, v))
    jax.tree.map(close, factored[:2], optim.fishleg_aux_loss_and_gradient(
        scaled_q, lam, grads, fvp, 0.1, precondition))


def _fvp_fn(model, params, x):
  return lambda v: curvature.ggn_vector_product(
      lambda p, xb: model.apply({"params": p}, xb), params, x, LIKELIHOOD)(v)


@pytest.mark.x64
def test_family_works_in_a_chain_under_jit_without_recompiling():
  model, params, x = _tiny_problem()
  # Gradient-changing transforms go after FishLeg: per_example factors the gradient itself.
  tx = optax.chain(optim.fishleg(0.05, damping=0.1, update_aux_every=2, q_family=FAMILY),
                   optax.clip_by_global_norm(10.0))
  traces = []

  def step(params, state, use_per_example):
    traces.append(use_per_example)
    _, grads, per_example = _value_grad_and_per_example(model, params, x, x)
    extra = {"per_example": per_example} if use_per_example else {}
    updates, state = tx.update(grads, state, params, fvp_fn=_fvp_fn(model, params, x),
                               rng=jax.random.key(0), unknown_extra_arg=1, **extra)
    return optax.apply_updates(params, updates), state, updates

  jitted = jax.jit(step, static_argnums=2)
  state = tx.init(params)
  params_dense, state_dense = params, state
  for _ in range(4):  # aux steps at counts 0 and 2: lam moves off Q_0 = I
    params, state, updates = jitted(params, state, True)
    params_dense, state_dense, updates_dense = jitted(params_dense, state_dense, False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 updates, updates_dense)
  assert traces == [True, False], traces
  assert optim.q_family_of(state[0][0].lam) == FAMILY
  assert float(state[0][0].aux_loss) != 0.0


def test_per_example_for_a_block_the_family_does_not_factor_is_an_error():
  model, params, x = _tiny_problem()
  _, grads, per_example = _value_grad_and_per_example(model, params, x, x)
  structure = optim.q_structure(params, FAMILY)
  lam = structure.lam_for_diagonal(jax.tree.map(jnp.ones_like, params))
  cache = structure.product_cache(lam)
  with pytest.raises(ValueError, match="Decoder.*allowed: Dense_0, Dense_1, Encoder/Dense_0"):
    structure.q_vector_cached(lam, cache, grads, {"Decoder": per_example["Dense_0"]})
  swapped = {"Dense_1": per_example["Dense_0"]}
  with pytest.raises(ValueError, match=r"per_example\['Dense_1'\] must hold inputs \(N, 6\)"):
    structure.q_vector_cached(lam, cache, grads, swapped)
  # The elementwise Kronecker family cannot use them and ignores them.
  kron = optim.q_structure(params, "kronecker")
  kron_lam = kron.lam_for_diagonal(jax.tree.map(jnp.ones_like, params))
  ignored = kron.q_vector_cached(kron_lam, kron.product_cache(kron_lam), grads, swapped)
  jax.tree.map(np.testing.assert_array_equal, ignored, grads)


class _Shared(nn.Module):
  @nn.compact
  def __call__(self, x):
    shared = nn.Dense(4)
    return nn.Dense(2)(shared(jnp.tanh(shared(x))))


@pytest.mark.x64
def test_a_dense_layer_called_twice_is_left_out_and_q_takes_its_gradient():
  x = jax.random.uniform(jax.random.key(0), (3, 4), jnp.float64)
  params = jax.tree.map(lambda p: p.astype(jnp.float64),
                        _Shared().init(jax.random.key(1), x)["params"])
  _, grads, per_example = _value_grad_and_per_example(_Shared(), params, x, x[:, :2])
  assert set(per_example) == {"Dense_1"}
  structure = optim.q_structure(params, FAMILY)
  lam = _random_lam(structure, jax.random.key(2))
  cache = structure.product_cache(lam)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10),
               structure.q_vector_cached(lam, cache, grads, per_example),
               structure.q_vector(lam, grads))
