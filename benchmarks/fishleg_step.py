"""Amortised FishLeg step time over Adam step time, measured and as a FLOP floor, at two batches.

The FishLeg paper's MNIST autoencoder 784-1000-500-250-30-250-500-1000-784 (ReLU, linear code,
Bernoulli NLL summed over pixels; ``gnrev.nets.Autoencoder``) on the real ``mnist5k``
digits (pixels / 255), at batch 100 and batch 1000, exact-GGN aux products on a separate batch
of the same size, one aux step every ``update_aux_every = 10`` updates; FishLeg and Adam with
the settings of ``configs/fishleg_autoencoder.py`` (``fishleg`` and ``adam_1em3``), FishLeg with
two Q families: ``kronecker`` (``fishleg_*``: Kronecker blocks with the elementwise factor,
Q applied to the weight-shaped gradient) and ``kronecker_per_example`` (``per_example_*``: no
elementwise factor; the step's Q g from the Dense layers' per-example inputs and output
gradients, which ``optim.value_grad_and_per_example`` returns with the gradient in one pass).

Every optimizer runs as one jitted ``lax.scan`` over ``steps`` training steps, timed after
compilation (median of ``repeats`` chunks, all variants interleaved). FishLeg variants, for
each family:

* ``*_cond``: the single transform, aux step gated by ``lax.cond`` on the step count,
  ``fvp_fn`` built lazily (linearisation inside the call, so its forward pass runs only on
  aux steps);
* ``*_split``: no ``lax.cond``: ``update(..., update_aux=True)`` once, then ``k - 1``
  steps with ``update_aux=False`` (an outer scan over groups of ``k`` steps);
* ``*_no_aux``: ``update_aux=False`` on every step (the Q product alone).

FLOP floor: XLA's own FLOP count (``compiled.cost_analysis()``) of one Adam step, one FishLeg
step without and one with the aux step (separate programs, no ``lax.cond``), amortised as
``((k - 1) plain + aux) / k``; next to it the analytic count of the dominant matrix products
(``6 B W`` for forward + backward with ``W`` weights; ``2 n m (n + m)`` per Kronecker block
``(n, m)`` for ``Q U = A (L L^T (A U) R^T R)`` from the cached ``L L^T`` and ``R^T R``; aux
step ``~10 B W`` for the GGN product plus ~4 cached Q products' worth for ``Q u``, the
preconditioned residual and the closed-form lam-gradient, plus ``(n^3 + m^3)`` per block in
that gradient and ``2 (n^3 + m^3)`` to rebuild the cache). The per-example family's step
product is ``2 B (n^2 + m^2 + n m)`` per block; its aux step takes the probe (the gradient) in
the same factored form, so ``Q u`` costs that too and the lam-gradient with the preconditioned
residual ``2 B (7 (n^2 + m^2) + 2 n m)`` (``KroneckerBlock.per_example_vjp``), where cheaper;
the GGN product and the cache rebuild are the other family's.

    python -m benchmarks.fishleg_step      # from the repository root; 30 min on 2 busy cores
    python benchmarks/fishleg_step.py --sizes mnist_paper_batch100 --repeats 3
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository root importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402



def _add_arguments(parser):
  parser.add_argument("--sizes", default="mnist_paper_batch100,mnist_paper_batch1000",
                      help="comma-separated sizes out of mnist_paper_batch100, "
                           "mnist_paper_batch1000, tiny (default: %(default)s)")
  parser.add_argument("--repeats", type=common.positive_int, default=5,
                      help="timed chunks per variant (default: %(default)s)")


if __name__ == "__main__":
  common.parse_args(__doc__, _add_arguments)  # --help and bad flags stop before JAX is imported

import functools  # noqa: E402
import inspect  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs.fishleg_autoencoder import all_runs, get_config  # noqa: E402
from gnrev import curvature, data, optim  # noqa: E402
from gnrev.nets import Autoencoder  # noqa: E402

LIKELIHOOD = curvature.bernoulli()
SIZES = {
    # name: (encoder widths, batch size, steps per timed chunk)
    "mnist_paper_batch100": ((1000, 500, 250), 100, 20),
    "mnist_paper_batch1000": ((1000, 500, 250), 1000, 10),
    "tiny": ((32, 16), 20, 10),  # seconds: checks the script end to end
}
# Variant prefix -> Q family.
FAMILIES = {"fishleg": "kronecker", "per_example": "kronecker_per_example"}
MODES = ("no_aux", "cond", "split")


def make_optimizer(name: str, q_family: str = "kronecker") -> optax.GradientTransformation:
  """The config's ``fishleg`` (with ``q_family``) or ``adam_1em3`` run as an optax transform,
  FishLeg at its defaults (the aux warm-up included: untimed chunks run past it, see
  :func:`median_chunk_seconds`)."""
  options = dict(all_runs()["fishleg" if name == "fishleg" else "adam_1em3"])
  del options["name"]
  return (optim.fishleg(**options, q_family=q_family) if name == "fishleg"
          else optax.adam(**options))


def skipped_steps(opt_state) -> int:
  """FishLeg's count of skipped (non-finite) updates in ``opt_state``; 0 for Adam."""
  return int(optax.tree.get(opt_state, "num_skipped", default=0))


def _lazy_fvp_fn(model, params, x_aux):
  """``v -> F v`` that linearises when called: its forward pass runs on aux steps only."""
  return lambda v: curvature.ggn_vector_product(
      lambda p, xb: model.apply({"params": p}, xb), params, x_aux, LIKELIHOOD)(v)


def make_step(model, tx, variant: str, update_aux=None):
  """``(params, opt_state, pixels, idx, aux_idx, key) -> (params, opt_state)``, one variant."""
  per_example = variant.startswith("per_example")

  def step(params, opt_state, pixels, idx, aux_idx, key):
    x = pixels[idx]
    loss_fn = lambda outputs: LIKELIHOOD.nll(outputs, x)
    if per_example:
      _, grads, terms = optim.value_grad_and_per_example(model, params, x, loss_fn)
    else:
      grads = jax.grad(lambda p: loss_fn(model.apply({"params": p}, x)))(params)
    extra = {}
    if variant != "adam":
      extra = {"fvp_fn": _lazy_fvp_fn(model, params, pixels[aux_idx]), "rng": key}
      if per_example:
        extra["per_example"] = terms
      if update_aux is not None:
        extra["update_aux"] = update_aux
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state

  return step


def _scan_steps(step, carry, pixels, inputs):
  body = lambda carry, inputs: (step(*carry, pixels, *inputs), None)
  return jax.lax.scan(body, carry, inputs)[0]


def make_chunk(model, tx, variant: str, every: int):
  """Jitted ``(params, opt_state, pixels, batch_idx, aux_idx, keys) -> (params, opt_state)``."""
  if variant.endswith("_split"):
    with_aux = make_step(model, tx, variant, update_aux=True)
    without_aux = make_step(model, tx, variant, update_aux=False)

    def group(carry, pixels, inputs):
      carry = with_aux(*carry, pixels, *(a[0] for a in inputs))
      return _scan_steps(without_aux, carry, pixels, tuple(a[1:] for a in inputs))

    def run(carry, pixels, inputs):
      grouped = tuple(a.reshape(-1, every, *a.shape[1:]) for a in inputs)
      body = lambda carry, group_inputs: (group(carry, pixels, group_inputs), None)
      return jax.lax.scan(body, carry, grouped)[0]
  else:
    update_aux = False if variant.endswith("_no_aux") else None
    run = functools.partial(_scan_steps, make_step(model, tx, variant, update_aux))

  @jax.jit
  def chunk(params, opt_state, pixels, batch_idx, aux_idx, keys):
    return run((params, opt_state), pixels, (batch_idx, aux_idx, keys))

  return chunk


def median_chunk_seconds(model, optimizers: dict, params, pixels, batch: int, steps: int,
                         repeats: int, every: int, warmup: int) -> tuple[dict, dict]:
  """Median seconds per chunk for every ``variant -> tx``, timed round-robin, and the updates
  each variant skipped as non-finite over all its chunks.

  Every variant first trains untimed for at least ``warmup`` steps on FishLeg's own schedule
  (the ``*_cond`` chunk: the aux warm-up, then one aux step every ``every``), so that all are
  timed from a learned Q in the steady state (``*_no_aux`` and ``*_split`` alone would never
  take the warm-up; ``*_no_aux`` would train on ``Q_0``); then each repeat times every
  variant in turn, so that load from other processes falls on all variants alike. A skipped
  update keeps the state, step count included, so the ``lax.cond`` schedule of a run that had
  diverged would stop taking aux steps: the counts say whether any did.
  """
  rng = np.random.default_rng(0)
  keys = jax.random.split(jax.random.key(1), steps)
  draw = lambda: rng.integers(0, len(pixels), (steps, batch)).astype(np.int32)
  chunks = {variant: make_chunk(model, tx, variant, every) for variant, tx in optimizers.items()}
  carries = {}
  for variant, tx in optimizers.items():
    mode = next((m for m in MODES if variant.endswith("_" + m)), None)
    warm = chunks[variant[:-len(mode)] + "cond"] if mode else chunks[variant]
    carries[variant] = (params, tx.init(params))
    for _ in range(max(1, -(-warmup // steps))):
      carries[variant] = jax.block_until_ready(
          warm(*carries[variant], pixels, draw(), draw(), keys))
    carries[variant] = jax.block_until_ready(  # the variant's own chunk, compiled
        chunks[variant](*carries[variant], pixels, draw(), draw(), keys))
  times = {variant: [] for variant in optimizers}
  for repeat in range(repeats):
    common.log(f"  repeat {repeat + 1}/{repeats}")
    batch_idx, aux_idx = draw(), draw()
    for variant, chunk in chunks.items():
      tic = time.perf_counter()
      carries[variant] = jax.block_until_ready(
          chunk(*carries[variant], pixels, batch_idx, aux_idx, keys))
      times[variant].append(time.perf_counter() - tic)
  return ({variant: statistics.median(t) for variant, t in times.items()},
          {variant: skipped_steps(carry[1]) for variant, carry in carries.items()})


def xla_flops(model, tx, variant, params, pixels, batch, update_aux=None) -> float:
  step = jax.jit(make_step(model, tx, variant, update_aux))
  idx = jnp.arange(batch)
  compiled = step.lower(params, tx.init(params), pixels, idx, idx, jax.random.key(0)).compile()
  return float(compiled.cost_analysis()["flops"])


def analytic_flops(widths, batch, every) -> dict:
  layers = list(zip(widths[:-1], widths[1:]))
  weights = sum(n * m for n, m in layers)
  grad = 6 * batch * weights - 2 * batch * widths[0] * widths[1]
  # Q U from the cached L L^T and R^T R: two products per block.
  q_blocks = {f"Dense_{i}({n + 1}x{m})": 2 * (n + 1) * m * (n + 1 + m)
              for i, (n, m) in enumerate(layers)}
  q_product = sum(q_blocks.values())
  cache = sum(2 * ((n + 1)**3 + m**3) for n, m in layers)
  # Aux step: the GGN product, Q u and the preconditioned residual from the cache (2 products),
  # the closed-form lam-gradient (~2 products' worth plus (n^3 + m^3) for the L and R
  # multiplications), the new cache. The same for both families.
  aux = 10 * batch * weights + 4 * q_product + 1.5 * cache
  # Q g from the per-example inputs X (B, n) and output gradients Delta (B, m) of each Dense
  # layer: X L L^T, Delta R^T R and their (n, m) product, where that is the cheaper route
  # (KroneckerBlock.per_example_is_cheaper), else the weight-shaped product.
  per_example = sum(min(2 * batch * ((n + 1)**2 + m**2 + (n + 1) * m),
                        2 * (n + 1) * m * (n + 1 + m)) for n, m in layers)
  # Its aux step: Q u by the same route, the lam-gradient with the probe factored (never forming
  # Q r) where cheaper, else the weight-shaped preconditioning product and closed-form gradient.
  per_example_aux = 10 * batch * weights + per_example + cache + sum(
      min(2 * batch * (7 * ((n + 1)**2 + m**2) + 2 * (n + 1) * m),
          2 * (3 * (n + 1) * m * (n + 1 + m) + (n + 1)**3 + m**3)) for n, m in layers)
  return {"grad": grad, "q_product_cached": q_product, "q_product_per_block": q_blocks,
          "q_product_per_example": per_example, "cache_rebuild": cache, "aux_step": aux,
          "aux_step_per_example": per_example_aux,
          "fishleg_over_adam_floor": (grad + q_product + aux / every) / grad,
          "per_example_over_adam_floor": (grad + per_example + per_example_aux / every) / grad,
          "per_example_no_aux_over_adam_floor": (grad + per_example) / grad}


def measure(size: str, config, pixels: np.ndarray, every: int, repeats: int) -> dict:
  encoder_widths, batch, steps = SIZES[size]
  model = Autoencoder(num_outputs=pixels.shape[1], encoder_widths=encoder_widths,
                      code_size=config.model.code_size)
  params = model.init(jax.random.key(0), pixels[:1])["params"]
  adam = make_optimizer("adam")
  fishlegs = {prefix: make_optimizer("fishleg", family) for prefix, family in FAMILIES.items()}
  flops = {"adam": xla_flops(model, adam, "adam", params, pixels, batch)}
  floor = {}
  for prefix, tx in fishlegs.items():
    without = xla_flops(model, tx, f"{prefix}_split", params, pixels, batch, False)
    with_aux = xla_flops(model, tx, f"{prefix}_split", params, pixels, batch, True)
    amortised = ((every - 1) * without + with_aux) / every
    flops.update({f"{prefix}_without_aux": without, f"{prefix}_with_aux": with_aux,
                  f"{prefix}_amortised": amortised})
    floor.update({f"{prefix}_no_aux": without / flops["adam"],
                  f"{prefix}_amortised": amortised / flops["adam"]})
  optimizers = {"adam": adam, **{f"{prefix}_{mode}": tx for prefix, tx in fishlegs.items()
                                 for mode in MODES}}
  warmup = inspect.signature(optim.fishleg).parameters["aux_warmup_steps"].default
  seconds, skipped = median_chunk_seconds(model, optimizers, params, pixels, batch, steps,
                                          repeats, every, warmup)
  widths = ((pixels.shape[1],) + encoder_widths + (config.model.code_size,) +
            encoder_widths[::-1] + (pixels.shape[1],))
  return {
      "network": "-".join(map(str, widths)), "batch_size": batch, "aux_batch_size": batch,
      "data": "mnist5k train split, pixels / 255",
      "steps_per_chunk": steps, "repeats": repeats, "untimed_warmup_steps": warmup,
      "skipped_updates": skipped,
      "step_ms": {v: 1e3 * s / steps for v, s in seconds.items()},
      "measured_over_adam": {v: s / seconds["adam"] for v, s in seconds.items() if v != "adam"},
      "xla_flops_per_step": flops,
      "flop_floor_over_adam": floor,
      "analytic_flops": analytic_flops(widths, batch, every),
  }


def main(argv=None):
  args = common.parse_args(__doc__, _add_arguments, argv)
  sizes = [size for size in args.sizes.split(",") if size]
  unknown = sorted(set(sizes) - set(SIZES))
  if unknown:
    raise SystemExit(f"Unknown size(s) {', '.join(unknown)}; allowed: {', '.join(SIZES)}.")
  config = get_config()
  every = all_runs()["fishleg"].get(
      "update_aux_every", inspect.signature(optim.fishleg).parameters["update_aux_every"].default)
  pixels = data.load_dataset("mnist5k", "train", normalise="unit").x.reshape(-1, 784)
  results = {}
  for size in sizes:
    common.log(f"measuring {size}")
    results[size] = measure(size, config, pixels, every, args.repeats)
  common.emit({
      "benchmark": "fishleg_step", "device": jax.devices()[0].platform,
      "update_aux_every": every, "load_average_per_cpu": common.load_average(),
      "targets": {"mnist_paper_batch100": {"fishleg_split": 2.0, "per_example_split": 3.0},
                  "mnist_paper_batch1000": {"fishleg_split": 1.6}}, **results})


if __name__ == "__main__":
  main()
