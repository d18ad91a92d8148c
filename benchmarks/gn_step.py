"""Cost of an exact Gauss-Newton step against an SGD step on the same RevMLP and batch.

Times, in one interleaved run (every repeat calls every step once; medians reported), jitted
steps including the optax update, at each size in --sizes:

  sgd               value_and_grad + optax.sgd on the paper's model (linear first block)
  gn_svd            gn.exact_gn with the paper's truncation (solver "svd": rtol 1e-2, atol 1e-5,
                    from the Gram's eigendecomposition) on the paper's model
  gn_thin_svd       the same step from the thin SVD of every feature matrix
  gn_damped         solver "damped" (damping 1e-3) on the paper's model
  sgd_relu          SGD on the model with ReLU in every block (full-rank features)
  gn_cholesky       solver "cholesky" (exact) on that model, activations kept
  gn_cholesky_invert  the same, block inputs rebuilt by inversion (memory-saving sweep)
  gn_svd_lowered, gn_cholesky_lowered  gn_svd and gn_cholesky at precision="default" (TF32
                    products on a recent NVIDIA GPU; the same step on a CPU): the cost of
                    gnrev's "highest" default (docs/precision.md); not in the default --variants

--variants picks the GN steps (each with its SGD baseline). Next to each ratio over SGD:
the ratio of the FLOP counts (forward, inverse, jvps, Gram products,
factorisations and solves per branch, counted analytically) and measured / floor. With
--accuracy (default at paper_mnist) the float32 steps are compared with the float64 thin-SVD
step on MNIST-like inputs (scikit-learn digits resized to 28 x 28, MNIST's normalisation, the
paper's init), with the path ("gram" or "svd") each branch of the "svd" solver took.

Sizes (n, d, M, L): tiny (32, 16, 64, 2; seconds, for tests), small (256, 784, 2048, 2),
paper_mnist (1024, 784, 8000, 2; about 3 minutes on 2 CPU cores), paper_cifar
(1024, 3072, 8000, 6; needs a GPU).

Examples (repository root):
  python benchmarks/gn_step.py                       # small and paper_mnist
  python -m benchmarks.gn_step --sizes tiny --repeats 2 --no-accuracy
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

SIZES = {"tiny": (32, 16, 64, 2), "small": (256, 784, 2048, 2),
         "paper_mnist": (1024, 784, 8000, 2), "paper_cifar": (1024, 3072, 8000, 6)}
PAPER_TRUNCATION = {"rtol": 1e-2, "atol": 1e-5}
DAMPING = 1e-3


def _add_arguments(parser):
  parser.add_argument("--sizes", default="small,paper_mnist",
                      help=f"comma-separated sizes out of {', '.join(SIZES)} "
                           "(default: %(default)s)")
  parser.add_argument("--repeats", type=common.positive_int, default=5,
                      help="interleaved timed repeats per step after compiling; the median is "
                           "reported (default: %(default)s)")
  parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                      help="comma-separated GN steps to time against SGD, out of "
                           f"{', '.join(VARIANTS)} (default: %(default)s)")
  parser.add_argument("--accuracy", default="paper_mnist",
                      help="comma-separated sizes at which to compare the float32 steps with "
                           "the float64 thin-SVD step on MNIST-like inputs ('' for none; "
                           "default: %(default)s)")
  parser.add_argument("--no-accuracy", dest="accuracy", action="store_const", const="",
                      help="skip the accuracy comparison")
  parser.add_argument("--accuracy_rtols", default="1e-2,4e-3,1e-3",
                      help="truncations (rtol, atol 1e-5) of the accuracy comparison; in "
                           "float32 the Gram path is used down to rtol ~3.5e-3 (default: "
                           "%(default)s)")


def _import_jax():
  # JAX is imported only after the command line was parsed (``--help`` answers at once).
  global jax, jnp, np, optax, gn, nets  # pylint: disable=global-variable-undefined
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from gnrev import gn, nets  # noqa: PLC0415


def _problem(batch, features, expansion, blocks, linear_first_block, classes=10, seed=0):
  model = nets.RevMLP(num_blocks=blocks, expansion=expansion, num_classes=classes,
                      linear_first_block=linear_first_block, init_std=1e-3,
                      memory_mode="autodiff")
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


# name: (ReLU in block 1?, exact_gn options)
VARIANTS = {
    "gn_svd": (False, {"solver": "svd", **PAPER_TRUNCATION}),
    "gn_thin_svd": (False, {"solver": "thin_svd", **PAPER_TRUNCATION}),
    "gn_damped": (False, {"solver": "damped", "damping": DAMPING}),
    "gn_cholesky": (True, {}),
    "gn_cholesky_invert": (True, {"keep_activations": False}),
}
# The same steps with the products lowered to JAX's default precision (name + LOWERED).
LOWERED = "_lowered"
VARIANTS.update({name + LOWERED: (VARIANTS[name][0],
                                  {**VARIANTS[name][1], "precision": "default"})
                 for name in ("gn_svd", "gn_cholesky")})
DEFAULT_VARIANTS = [name for name in VARIANTS if not name.endswith(LOWERED)]


def flop_counts(n, d, m, blocks, variant, linear_first_block=True, row_blocks=4):
  """Analytic FLOPs of one step, by part (multiply-add = 2 FLOPs; d split in equal halves).

  Per branch with input and output ``h = d / 2``: a ReLU branch's forward is ``u C`` and
  ``phi W^T`` (``4 n h M``), its jvp the same, its Gram ``A A^T`` the lower block triangle of
  ``row_blocks`` blocks (``n^2 M (k + 1) / k``), its direction ``A^T alpha`` (``2 n M h``). A
  linear first-block branch works on ``Q = [u L, 1]`` (``L L^T = C C^T``): ``C C^T`` and
  ``C W^T`` (``2 h^2 M`` each), ``Q^T Q`` or ``Q Q^T``, and ``C^T w`` for its direction.
  Factorisations: Cholesky ``s^3 / 3``, eigh ``9 s^3`` (tridiagonalisation and eigenvectors)
  for an ``s x s`` Gram. SGD: forward plus ``6 n h M`` per branch for the backward pass
  (``4 n h M`` for the first branch, whose input needs no gradient).
  """
  h = d // 2
  parts = dict.fromkeys(("forward", "inverse", "jvps", "gram_products", "factorisations",
                         "solves_and_directions"), 0.0)
  dense_forward = 4 * n * h * m
  if variant == "sgd":
    parts["forward"] = 2 * blocks * dense_forward
    parts["backward"] = 2 * blocks * 6 * n * h * m - 2 * n * h * m
    return parts
  variant = variant.removesuffix(LOWERED)   # the same FLOPs at any precision
  solver = {"gn_svd": "svd", "gn_thin_svd": "thin_svd", "gn_damped": "damped"}.get(variant,
                                                                                   "cholesky")
  invert = variant == "gn_cholesky_invert"
  exact = solver == "cholesky"
  for block in range(blocks):
    linear = linear_first_block and block == 0 and 2 * h <= m
    pull_back = block > 0
    for branch in ("F", "G"):
      del branch
      if linear:
        forward = 2 * h * h * m + 2 * n * h * h
        features = 2 * h * h * m + h**3 / 3 + n * h * h   # C C^T, its Cholesky, u L
        side = min(n, h + 1)
        gram = 2 * n * side * side if side == h + 1 else 2 * n * n * (h + 1)
        direction = 2 * h * m * h + h * h * h + 2 * n * (h + 1) * h
        jvp = 2 * n * h * h
      else:
        forward, side, jvp = dense_forward, n, dense_forward
        features = 2 * n * h * m if invert else 0   # phi(u C) recomputed after an inversion
        gram = n * n * m * (row_blocks + 1) / row_blocks
        direction = 2 * n * m * h
      if invert:
        parts["forward"] += dense_forward
        parts["inverse"] += dense_forward + features
      else:
        parts["forward"] += forward + features
      parts["gram_products"] += gram
      if solver == "thin_svd":
        # Golub-Reinsch thin SVD of an s x (M + 1) matrix (s = n, or h + 1 when factorised).
        cols = m + 1 if not linear else side
        parts["factorisations"] += 4 * side * side * cols + 8 * side**3
        parts["gram_products"] -= gram
      elif solver == "svd":
        parts["factorisations"] += 9 * side**3
      else:
        parts["factorisations"] += side**3 / 3
      solve = (4 if solver in ("svd", "thin_svd") else 2) * side * side * h
      realised = 0 if exact else 2 * side * side * h
      parts["solves_and_directions"] += solve + realised + direction
    # G'(y1)[T1] (cross term and pull-back), G'(y1)[A_F Omega_F] for an inexact F-solve (with a
    # pull-back; without one it replaces G'(y1)[T1]), F'(x2)[S2] (pull-back).
    jvps = 1 + (pull_back and not exact) + pull_back
    parts["jvps"] += jvps * jvp
  return parts


def revmlp_case(name, batch, features, expansion, blocks, repeats, variants):
  """Step times, their ratios over SGD and the FLOP floors at one size."""
  calls, problems = {}, {}
  for relu_first in (False, True):
    model, variables, x, labels = _problem(batch, features, expansion, blocks, not relu_first)
    params, fixed = variables["params"], variables["fixed"]
    if not any(VARIANTS[v][0] == relu_first for v in variants):
      continue
    calls["sgd_relu" if relu_first else "sgd"] = (_sgd_step(model), (params, fixed, x, labels))
    for variant, (relu, options) in VARIANTS.items():
      if relu == relu_first and variant in variants:
        step, tx = _gn_step(model, **options)
        calls[variant] = (step, (params, fixed, x, labels, tx.init(params)))
    problems[relu_first] = (model, variables, x, labels)
  loads = [common.load_average()]
  timings = common.time_interleaved(calls, repeats, label=f"{name}: ")
  loads.append(common.load_average())
  result = {"n": batch, "d": features, "M": expansion, "L": blocks, "repeats": repeats,
            "timing_note": common.noise_note(timings, loads),
            "load_per_cpu": loads, "seconds": timings, "steps": {}}
  for variant in calls:
    if variant.startswith("sgd"):
      continue
    relu = VARIANTS[variant][0]
    baseline = "sgd_relu" if relu else "sgd"
    flops = flop_counts(batch, features, expansion, blocks, variant, not relu)
    sgd_flops = flop_counts(batch, features, expansion, blocks, "sgd", not relu)
    measured = timings[variant]["median_s"] / timings[baseline]["median_s"]
    floor = sum(flops.values()) / sum(sgd_flops.values())
    result["steps"][variant] = {
        "baseline": baseline, "measured_over_sgd": measured,
        "min_time_over_sgd": timings[variant]["min_s"] / timings[baseline]["min_s"],
        "flop_floor_over_sgd": floor, "measured_over_floor": measured / floor,
        "gflops": {part: value / 1e9 for part, value in flops.items()},
        "sgd_gflops": {part: value / 1e9 for part, value in sgd_flops.items()}}
  return result


def _mnist_like(batch, features):
  """scikit-learn digits (8 x 8) resized to ``sqrt(d) x sqrt(d)``, MNIST's normalisation."""
  from sklearn.datasets import load_digits  # noqa: PLC0415

  side = int(round(features ** 0.5))
  if side * side != features:
    raise ValueError(f"MNIST-like inputs need a square input size, got d={features}.")
  digits = load_digits()
  index = np.arange(batch) % len(digits.target)
  images = jax.image.resize(jnp.asarray(digits.images[index] / 16.0, jnp.float32),
                            (batch, side, side), "linear")
  return (images.reshape(batch, features) - 0.1307) / 0.3081, jnp.asarray(digits.target[index])


def accuracy_case(name, batch, features, expansion, blocks, rtols):
  """Float32 "svd" and "thin_svd" steps against the float64 thin-SVD step, MNIST-like inputs."""
  model = nets.RevMLP(num_blocks=blocks, expansion=expansion, num_classes=10,
                      linear_first_block=True, init_std=1e-3)
  x, labels = _mnist_like(batch, features)
  variables = model.init(jax.random.key(0), x)
  flat = lambda tree: jnp.concatenate([leaf.reshape(-1) for leaf in jax.tree.leaves(tree)])
  direction = jax.jit(lambda v, x, y, rtol, solver: gn.exact_gn_direction(
      model, v, x, y, solver=solver, rtol=rtol, atol=1e-5, diagnostics=True),
                      static_argnums=4)
  results = []
  for rtol in rtols:
    common.log(f"{name}: accuracy at rtol={rtol:g} (float32)")
    steps = {solver: direction(variables, x, labels, rtol, solver) for solver in
             ("svd", "thin_svd")}
    common.log(f"{name}: accuracy at rtol={rtol:g} (float64 reference)")
    with jax.enable_x64(True):
      variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
      reference, info64 = gn.exact_gn_direction(
          model, variables64, np.asarray(x, np.float64), labels, solver="thin_svd", rtol=rtol,
          atol=1e-5, diagnostics=True)
      reference = np.asarray(flat(reference))
      rank64 = np.asarray(info64["rank"]).tolist()
    error = lambda d: float(np.linalg.norm(np.asarray(flat(d), np.float64) - reference)
                            / np.linalg.norm(reference))
    results.append({"rtol": rtol, "atol": 1e-5, "kept_singular_values_float64": rank64,
                    "kept_singular_values_float32_svd": np.asarray(
                        steps["svd"][1]["rank"]).tolist(),
                    "svd_path": [[gn.sweep.SVD_PATHS[p] for p in row]
                                 for row in np.asarray(steps["svd"][1]["svd_path"]).tolist()],
                    "relative_error_svd": error(steps["svd"][0]),
                    "relative_error_thin_svd": error(steps["thin_svd"][0])})
  return {"n": batch, "d": features, "M": expansion, "L": blocks,
          "inputs": "scikit-learn digits resized to 28 x 28 (MNIST normalisation)",
          "init": "W ~ N(0, 1e-3^2), b = 0, linear first block", "truncations": results}


def main(argv=None):
  args = common.parse_args(__doc__, _add_arguments, argv)
  names = [s for s in args.sizes.split(",") if s]
  accuracy = [s for s in args.accuracy.split(",") if s]
  variants = [v for v in args.variants.split(",") if v]
  unknown = sorted(set(names + accuracy) - set(SIZES))
  if unknown:
    raise SystemExit(f"Unknown size(s) {', '.join(unknown)}; allowed: {', '.join(SIZES)}.")
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"Unknown variant(s) {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}.")
  _import_jax()
  common.log(f"devices: {jax.devices()}")
  report = {"benchmark": "gn_step", "device": str(jax.devices()[0]),
            "backend": jax.default_backend(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "targets": {"gn_svd": 1.6, "gn_cholesky": 1.4, "gn_damped": 1.4},
            "revmlp": {}, "accuracy": {}}
  for name in names:
    report["revmlp"][name] = revmlp_case(name, *SIZES[name], repeats=args.repeats,
                                         variants=variants)
  rtols = [float(r) for r in args.accuracy_rtols.split(",") if r]
  for name in accuracy:
    report["accuracy"][name] = accuracy_case(name, *SIZES[name], rtols=rtols)
  common.emit(report)


if __name__ == "__main__":
  main()
