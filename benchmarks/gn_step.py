"""Cost of a Gauss-Newton step versus an SGD step on the same RevMLP and batch (one JSON object).

Measures, in one run and on one device:

* ``revmlp``: the exact GN step (``gn.exact_gn``, jitted, including the optax update) against an
  SGD step (jitted ``value_and_grad`` + ``optax.sgd`` update, plain autodiff) at
  n=256 d=784 M=2048 L=2 and at the paper's MNIST size n=1024 d=784 M=8000 L=2. Variants: the
  default (activations kept, one shared jvp), the memory-saving sweep that inverts the blocks,
  and the paper's linear first block, whose rank-deficient features need ``solver="damped"``.
* ``scaling``: the matrix-free min-norm step (conjugate gradients on ``J J^T``, a fixed number of
  iterations) and the dense step (``jax.jacfwd`` + least squares) at small sizes, to show how their
  cost grows with the number of parameters and the batch.

The CIFAR-size model (L=6, d=3072) needs a GPU and is only run with ``--cifar``.

Usage (repository root): ``PYTHONPATH=. python benchmarks/gn_step.py [--repeats 3] [--skip_paper_size]
[--cifar]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# jaxlib's LAPACK calls (Cholesky, triangular solves) go through OpenBLAS, whose own thread pool
# busy-waits against XLA's threads on a small CPU: measured 2.5x slower GN steps on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402  (after OPENBLAS_NUM_THREADS)
import optax  # noqa: E402

from gnrev import gn, nets  # noqa: E402


def _time(named_calls, repeats):
  """Fastest wall time in seconds of each ``name: (fn, args)`` after one compiling call.

  The calls are interleaved within every repeat and the minimum is kept, so that load from other
  processes on a shared machine affects all of them alike and inflates none of the ratios.
  """
  for fn, args in named_calls.values():
    jax.block_until_ready(fn(*args))
  times = {name: float("inf") for name in named_calls}
  for _ in range(repeats):
    for name, (fn, args) in named_calls.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name] = min(times[name], time.perf_counter() - start)
  return times


def _problem(batch, features, expansion, blocks, linear_first_block, classes=10, seed=0):
  model = nets.RevMLP(num_blocks=blocks, expansion=expansion, num_classes=classes,
                      linear_first_block=linear_first_block, memory_mode="autodiff")
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], (batch, features))
  labels = jax.random.randint(keys[1], (batch,), 0, classes)
  return model, model.init(keys[2], x), x, labels


def _sgd_step(model):
  tx = optax.sgd(0.1)

  @jax.jit
  def step(params, fixed, x, labels):
    def loss(p):
      return gn.loss_value("ce", model.apply({"params": p, "fixed": fixed}, x), labels)
    value, grads = jax.value_and_grad(loss)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates), value

  return step


def _gn_step(model, **options):
  tx = gn.exact_gn(0.1, model=model, loss="ce_identity", **options)

  @jax.jit
  def step(params, fixed, x, labels, state):
    updates, state = tx.update(params, state, params, batch=(x, labels), fixed=fixed)
    return optax.apply_updates(params, updates), state

  return step, tx


def revmlp_case(batch, features, expansion, blocks, repeats):
  """GN-step / SGD-step time ratios for one model size."""
  variants = {"gn_keep_activations": ({}, False),
              "gn_invert_blocks": ({"keep_activations": False}, False),
              "gn_linear_first_block_damped": ({"solver": "damped", "damping": 1e-3}, True)}
  calls = {}
  for linear_first_block in (False, True):
    model, variables, x, labels = _problem(batch, features, expansion, blocks, linear_first_block)
    params, fixed = variables["params"], variables["fixed"]
    if not linear_first_block:
      calls["sgd"] = (_sgd_step(model), (params, fixed, x, labels))
    for name, (options, linear) in variants.items():
      if linear == linear_first_block:
        step, tx = _gn_step(model, **options)
        calls[name] = (step, (params, fixed, x, labels, tx.init(params)))
  times = _time(calls, repeats)
  result = {"n": batch, "d": features, "M": expansion, "L": blocks, "sgd_s": times["sgd"]}
  for name in variants:
    result[name + "_s"] = times[name]
    result[name + "_over_sgd"] = times[name] / times["sgd"]
  return result


def scaling_case(batch, features, expansion, blocks, cg_iterations, repeats, dense):
  """Min-norm (CG) and dense GN step times for one small size."""
  model, variables, x, labels = _problem(batch, features, expansion, blocks, False, seed=1)
  fixed = variables["fixed"]
  apply_fn = lambda p, inputs, fixed: model.apply({"params": p, "fixed": fixed}, inputs)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
  result = {"n": batch, "d": features, "M": expansion, "L": blocks, "params": num_params,
            "cg_iterations": cg_iterations}

  @jax.jit
  def min_norm(params, fixed, x, labels):
    return gn.min_norm_gn_direction(lambda p, inputs: apply_fn(p, inputs, fixed), params, x,
                                    labels, loss="ce_identity", damping=1e-6,
                                    maxiter=cg_iterations, tol=0.0)[0]

  @jax.jit
  def exact(params, fixed, x, labels):
    return gn.exact_gn_direction(model, {"params": params, "fixed": fixed}, x, labels,
                                 diagnostics=False)[0]

  calls = {"exact": (exact, (variables["params"], fixed, x, labels)),
           "min_norm_cg": (min_norm, (variables["params"], fixed, x, labels))}
  if dense:
    @jax.jit
    def dense_step(params, fixed, x, labels):
      return gn.dense_gn_direction(lambda p, inputs: apply_fn(p, inputs, fixed), params, x,
                                   labels, loss="ce_identity")
    calls["dense"] = (dense_step, (variables["params"], fixed, x, labels))
  result.update({name + "_s": seconds for name, seconds in _time(calls, repeats).items()})
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_paper_size", action="store_true",
                      help="skip n=1024, M=8000 (about a minute on two CPU cores)")
  parser.add_argument("--cifar", action="store_true", help="also n=1024 d=3072 M=8000 L=6 (GPU)")
  args = parser.parse_args()

  sizes = [(256, 784, 2048, 2)]
  if not args.skip_paper_size:
    sizes.append((1024, 784, 8000, 2))
  if args.cifar:
    sizes.append((1024, 3072, 8000, 6))
  report = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "revmlp": [revmlp_case(*size, repeats=args.repeats) for size in sizes],
            "scaling": [scaling_case(n, 64, m, 2, 20, args.repeats, dense=m <= 64)
                        for n in (16, 64) for m in (64, 512)]}
  if not args.cifar:
    report["cifar_skipped"] = "CIFAR size (L=6, d=3072) needs a GPU; pass --cifar to run it."
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
