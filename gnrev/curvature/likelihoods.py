"""Likelihoods for curvature products: negative log-likelihood, sampling, output-space Fisher.

Each likelihood is a :class:`Likelihood` of three pure functions of the network outputs:

* ``nll(outputs, targets)``: the negative log-likelihood summed over an example's output
  dimensions and averaged over the leading batch axis (a per-example mean, as kfac-jax and
  FishLeg expect);
* ``sample(outputs, rng)``: targets drawn from the model, ``y ~ p(y | outputs)``;
* ``output_fisher_product(outputs, w)``: ``H_out w``, the Hessian of ``nll`` with respect to
  ``outputs`` applied to an output-shaped ``w``. All three likelihoods use their canonical link
  (identity mean, logits, logits), so this Hessian does not depend on the targets and equals the
  output-space Fisher; ``J^T H_out J`` is then both the GGN and the Fisher of ``nll``.

The ``1 / batch`` factor of the mean is part of ``H_out``, so products built from it are the
curvature of ``nll`` itself.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Likelihood(NamedTuple):
  """A predictive distribution over targets given network outputs (see module docstring)."""
  name: str
  nll: Callable[[jax.Array, jax.Array], jax.Array]
  sample: Callable[[jax.Array, jax.Array], jax.Array]
  output_fisher_product: Callable[[jax.Array, jax.Array], jax.Array]


def _batch_size(outputs: jax.Array) -> int:
  if outputs.ndim < 2:
    raise ValueError(
        f"outputs must have a leading batch axis and a feature axis, got shape {outputs.shape}.")
  return outputs.shape[0]


def gaussian(sigma: float = 1.0) -> Likelihood:
  """Isotropic Gaussian ``N(y; outputs, sigma^2 I)`` with fixed ``sigma`` (FACES autoencoder).

  Args:
    sigma: the fixed standard deviation, > 0.

  Returns:
    A :class:`Likelihood` whose output Fisher is ``I / (sigma^2 batch)``.

  Example:
    >>> lik = gaussian(1.0)
    >>> float(lik.nll(jnp.zeros((2, 3)), jnp.zeros((2, 3))))  # 3/2 log(2 pi)
    2.756...
  """
  if not sigma > 0:
    raise ValueError(f"gaussian likelihood needs sigma > 0, got {sigma}.")
  log_norm = 0.5 * math.log(2 * math.pi * sigma**2)

  def nll(outputs, targets):
    per_dim = 0.5 * ((outputs - targets) / sigma)**2 + log_norm
    return jnp.sum(per_dim) / _batch_size(outputs)

  def sample(outputs, rng):
    return outputs + sigma * jax.random.normal(rng, outputs.shape, outputs.dtype)

  def output_fisher_product(outputs, w):
    return w / (sigma**2 * _batch_size(outputs))

  return Likelihood("gaussian", nll, sample, output_fisher_product)


def bernoulli() -> Likelihood:
  """Independent Bernoulli per output with ``outputs`` the logits (binary-pixel autoencoders).

  Targets may be any values in [0, 1] (pixel intensities), as in the deep-autoencoder
  benchmarks; ``sample`` draws hard 0/1 targets.

  Returns:
    A :class:`Likelihood` whose output Fisher is ``diag(p (1 - p)) / batch``, ``p = sigmoid``.
  """

  def nll(outputs, targets):
    per_dim = jax.nn.softplus(outputs) - targets * outputs
    return jnp.sum(per_dim) / _batch_size(outputs)

  def sample(outputs, rng):
    return jax.random.bernoulli(rng, jax.nn.sigmoid(outputs)).astype(outputs.dtype)

  def output_fisher_product(outputs, w):
    p = jax.nn.sigmoid(outputs)
    return p * (1 - p) * w / _batch_size(outputs)

  return Likelihood("bernoulli", nll, sample, output_fisher_product)


def categorical() -> Likelihood:
  """Softmax categorical over the last axis with ``outputs`` the logits; targets are int labels.

  Returns:
    A :class:`Likelihood` whose output Fisher is ``(diag(p) - p p^T) / batch`` per example.
  """

  def nll(outputs, targets):
    log_p = jax.nn.log_softmax(outputs, axis=-1)
    picked = jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)
    return -jnp.sum(picked) / _batch_size(outputs)

  def sample(outputs, rng):
    return jax.random.categorical(rng, outputs, axis=-1).astype(jnp.int32)

  def output_fisher_product(outputs, w):
    p = jax.nn.softmax(outputs, axis=-1)
    pw = p * w
    return (pw - p * jnp.sum(pw, axis=-1, keepdims=True)) / _batch_size(outputs)

  return Likelihood("categorical", nll, sample, output_fisher_product)


LIKELIHOODS = {"gaussian": gaussian, "bernoulli": bernoulli, "categorical": categorical}


def get_likelihood(name: str, **kwargs) -> Likelihood:
  """Looks a likelihood up by its config string (``"gaussian"``, ``"bernoulli"``, ``"categorical"``)."""
  if name not in LIKELIHOODS:
    raise ValueError(f"Unknown likelihood {name!r}; allowed: {sorted(LIKELIHOODS)}.")
  return LIKELIHOODS[name](**kwargs)
