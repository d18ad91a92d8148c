"""Per-example inputs and output gradients of a flax model's ``nn.Dense`` layers, unregistered.

A dense layer ``y = x W + b`` on a batch has the gradient ``dL/dW = X^T Delta`` (and
``dL/db = 1^T Delta``), with ``X`` the layer's inputs and ``Delta = dL/dY`` the gradient of the
loss with respect to its outputs, one row per example. The ``"kronecker_per_example"`` Q family
applies Q to that gradient without forming it (:meth:`KroneckerBlock.per_example_product`).

:func:`value_grad_and_per_example` reads ``X`` and ``Delta`` off any flax model without layer
registration or changes to the model: a method interceptor (``flax.linen.intercept_methods``)
wraps every ``nn.Dense`` call, sows its input into a collection and adds a zero perturbation
(``Module.perturb``) to its output, whose gradient is ``Delta``. One forward and one backward
pass give the loss, the parameter gradients and every ``(X, Delta)``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from gnrev.optim.q_blocks import PerExample

PyTree = Any
_INPUTS = "dense_inputs"
_OUTPUT_PERTURBATIONS = "dense_output_perturbations"


def _tap_dense_layers(next_fun, args, kwargs, context):
  """Interceptor: every ``nn.Dense.__call__`` sows its input and perturbs its output."""
  module = context.module
  if not (isinstance(module, nn.Dense) and context.method_name == "__call__"):
    return next_fun(*args, **kwargs)
  module.sow(_INPUTS, "inputs", args[0] if args else kwargs["inputs"])
  return module.perturb("outputs", next_fun(*args, **kwargs), collection=_OUTPUT_PERTURBATIONS)


def value_grad_and_per_example(
    model: nn.Module, params: PyTree, x: Any, loss_fn: Callable[[Any], jax.Array], *,
    fixed: dict | None = None) -> tuple[jax.Array, PyTree, dict[str, PerExample]]:
  """Loss, parameter gradients and every trained ``nn.Dense`` layer's ``(X, Delta)``.

  .. math:: \\frac{\\partial L}{\\partial W} = X^\\top \\Delta, \\qquad
            \\Delta = \\frac{\\partial L}{\\partial Y}, \\quad Y = X W + b,

  with ``L = loss_fn(model.apply({"params": params, **fixed}, x))``: ``Delta`` carries the
  loss's own convention (a batch mean's ``1 / N``), so ``X^T Delta`` is exactly the kernel's
  gradient on this batch. Leading axes of a layer's input beyond the last are flattened into
  rows (a Dense over positions: every position is a row).

  Args:
    model: a flax module; its ``nn.Dense`` layers are found while it runs.
    params: its trained parameters.
    x: the model's input batch.
    loss_fn: ``outputs -> scalar`` (the loss as trained, targets closed over).
    fixed: the model's other variable collections, if any (passed to ``apply`` unchanged).

  Returns:
    ``(loss, grads, per_example)``, ``per_example`` mapping each Dense layer's Q block name
    (its module path, ``"Dense_0"``, ``"Encoder/Dense_1"``; ``"kernel"`` for a root Dense) to a
    :class:`~gnrev.optim.q_blocks.PerExample`. Left out: Dense layers whose kernel is not in
    ``params``, and layers called more than once (shared weights: their gradient is a sum over
    calls that one ``(X, Delta)`` pair does not hold); Q takes their gradient as it is.

  Example:
    >>> model = nn.Dense(2)
    >>> x = jnp.ones((3, 4))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> loss, grads, per_example = value_grad_and_per_example(
    ...     model, params, x, lambda y: jnp.mean(jnp.sum(y**2, axis=-1)))
    >>> terms = per_example["kernel"]             # a root Dense's block is named by its kernel
    >>> bool(jnp.allclose(terms.inputs.T @ terms.output_grads, grads["kernel"]))
    True
  """
  fixed = {} if fixed is None else fixed

  def run(variables, mutable):
    with nn.intercept_methods(_tap_dense_layers):
      return model.apply({"params": params, **fixed, **variables}, x, mutable=mutable)

  _, shapes = jax.eval_shape(lambda: run({}, [_OUTPUT_PERTURBATIONS, _INPUTS]))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[_OUTPUT_PERTURBATIONS])

  def loss_of(trained, perturbations):
    with nn.intercept_methods(_tap_dense_layers):
      outputs, taps = model.apply({"params": trained, **fixed,
                                   _OUTPUT_PERTURBATIONS: perturbations}, x, mutable=[_INPUTS])
    return loss_fn(outputs), taps[_INPUTS]

  (loss, inputs), (grads, output_grads) = jax.value_and_grad(
      loss_of, argnums=(0, 1), has_aux=True)(params, zeros)
  kernels = {path[:-1] for path in traverse_util.flatten_dict(params) if path[-1] == "kernel"}
  output_grads = traverse_util.flatten_dict(output_grads)
  per_example = {}
  for path, calls in traverse_util.flatten_dict(inputs).items():
    module_path = path[:-1]
    if module_path not in kernels or len(calls) != 1:
      continue
    # The Q block's name (q_structure): the kernel's parent path, or "kernel" at the root.
    name = "/".join(module_path) or "kernel"
    delta = output_grads[module_path + ("outputs",)]
    per_example[name] = PerExample(calls[0].reshape(-1, calls[0].shape[-1]),
                                   delta.reshape(-1, delta.shape[-1]))
  return loss, grads, per_example
