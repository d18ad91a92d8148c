"""Matrix-free curvature-vector products for any ``apply_fn(params, x) -> outputs``.

Naming scheme: ``<curvature>_vector_product(...)`` builds the product at fixed ``params`` and
returns a linear map ``v -> C v`` on params-shaped pytrees (linearisation done once, reused for
every ``v``):

* :func:`ggn_vector_product`: ``G v = J^T H_out J v`` (jvp, output-space Fisher, vjp). Exact,
  no label sampling; equals the Fisher for the canonical-link likelihoods of
  :mod:`gnrev.curvature.likelihoods`.
* :func:`sampled_fisher_vector_product`: the FishLeg paper's estimator, the Hessian of the NLL at
  labels sampled from the model, applied to ``v``; its expectation over the labels is ``F v``.
* :func:`hessian_vector_product`: the plain Hessian of any scalar ``loss_fn(params)``
  (forward-over-reverse).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from gnrev.curvature.jacobian import linearize_output
from gnrev.curvature.likelihoods import Likelihood

PyTree = Any
LinearMap = Callable[[PyTree], PyTree]


def ggn_vector_product(apply_fn: Callable, params: PyTree, x: Any,
                       likelihood: Likelihood) -> LinearMap:
  """Generalised Gauss-Newton (= Fisher for canonical links) product ``v -> J^T H_out J v``.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs`` (logits / means, batch-leading).
    params: the point at which ``J = d outputs / d params`` is taken.
    x: the input batch (any pytree ``apply_fn`` accepts).
    likelihood: supplies ``output_fisher_product`` (``H_out``, including the 1/batch factor).

  Returns:
    A function mapping a params-shaped ``v`` to ``G v`` (same structure and dtypes).

  Example:
    >>> import jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p["w"]
    >>> params, x = {"w": jnp.zeros((3, 2))}, jnp.eye(3)
    >>> from gnrev.curvature import bernoulli
    >>> gv = ggn_vector_product(apply_fn, params, x, bernoulli())
    >>> gv({"w": jnp.ones((3, 2))})["w"].tolist()     # sigma'(0) = 1/4, batch mean 1/3
    [[0.0833..., 0.0833...], [0.0833..., 0.0833...], [0.0833..., 0.0833...]]
  """
  outputs, jvp_fn, vjp_fn = linearize_output(apply_fn, params, x)
  return lambda v: vjp_fn(likelihood.output_fisher_product(outputs, jvp_fn(v)))


def hessian_vector_product(loss_fn: Callable[[PyTree], jax.Array], params: PyTree) -> LinearMap:
  """Exact Hessian product ``v -> (d^2 loss / d params^2) v`` by forward-over-reverse.

  Args:
    loss_fn: scalar function of ``params`` alone (close over the batch).
    params: the point of evaluation.

  Returns:
    A function mapping a params-shaped ``v`` to ``H v``.
  """
  _, hvp_fn = jax.linearize(jax.grad(loss_fn), params)
  return hvp_fn


def sampled_fisher_vector_product(apply_fn: Callable, params: PyTree, x: Any,
                                  likelihood: Likelihood, rng: jax.Array) -> LinearMap:
  """FishLeg's Fisher estimator: Hessian of the NLL at model-sampled labels, ``v -> H_yhat v``.

  Labels ``y_hat ~ p(y | x, params)`` are drawn once from ``rng``; the product is the exact
  Hessian of ``nll(apply_fn(params, x), y_hat)`` (including its second-derivative-of-network
  term), whose expectation over ``y_hat`` is the Fisher product ``F v`` (Garcia et al. 2023,
  docs/optim.md, "Fisher products"). Use a fresh ``rng`` for every call.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``.
    params: the point of evaluation.
    x: the (auxiliary) input batch.
    likelihood: the model's predictive distribution.
    rng: PRNG key for the labels.

  Returns:
    A function mapping a params-shaped ``v`` to the sampled-label Hessian product.
  """
  targets = jax.lax.stop_gradient(likelihood.sample(apply_fn(params, x), rng))
  return hessian_vector_product(lambda p: likelihood.nll(apply_fn(p, x), targets), params)
