"""A local MNIST-1D generator: 1-D digit-like sequences made harder by random transformations.

MNIST-1D (Greydanus, 2020) turns ten short hand-made templates into length-40 sequences by
padding, shifting, scaling, shearing and adding correlated and white noise, so that simple
models separate from deep ones while a CPU trains in seconds. This is gnrev's own generator of
that kind of data (not the package's code or its download path): same sizes (5,000 sequences,
10 classes, length 40, seed 42 by default), deterministic for a seed, never touching global RNGs.
"""

from __future__ import annotations

import numpy as np

# Ten 12-point templates, one per class: strokes that rise, fall, dip and oscillate differently.
TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],          # 0: a wide arch
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],        # 1: a dip then a slow climb
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 7, 7],        # 2: climb ending high
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],      # 3: up then down then back
    [5, 4.5, 4, 3.5, 3.5, 4, 5, 6, 6.5, 6.5, 6, 5],          # 4: down then up
    [5, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 5],                    # 5: a flat trough
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],        # 6: a peak then a slow fall
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 3, 3],        # 7: fall ending low
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],          # 8: a wide bowl
    [5, 6, 7, 6, 5, 4, 3, 4, 5, 6, 7, 5],                    # 9: a full oscillation
], np.float64) - 5.0


def _smooth_noise(rng: np.random.Generator, length: int, scale: float, width: float) -> np.ndarray:
  """Correlated noise: white noise convolved with a Gaussian of standard deviation ``width``."""
  offsets = np.arange(-3 * int(width) - 1, 3 * int(width) + 2)
  kernel = np.exp(-0.5 * (offsets / width) ** 2)
  kernel /= np.sqrt((kernel ** 2).sum())
  return scale * np.convolve(rng.standard_normal(length + len(offsets) - 1), kernel, "valid")


def _transform(template: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
  """One example: pad, scale, shear, add correlated noise, shift, resample, add white noise."""
  padded = np.concatenate([np.zeros(rng.integers(36, 61)), template,
                           np.zeros(rng.integers(36, 61))])
  padded = padded * rng.uniform(0.6, 1.4)
  positions = np.linspace(-1.0, 1.0, len(padded))
  padded = padded + rng.uniform(-0.75, 0.75) * positions
  padded = padded + _smooth_noise(rng, len(padded), scale=0.25, width=2.0)
  padded = np.roll(padded, rng.integers(-10, 11))
  grid = np.linspace(0, len(padded) - 1, length)
  resampled = np.interp(grid, np.arange(len(padded)), padded)
  return resampled + 0.25 * rng.standard_normal(length)


def make_mnist1d(num_examples: int = 5000, length: int = 40,
                 seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
  """Generates MNIST-1D-style sequences.

  Args:
    num_examples: number of sequences (classes are balanced: example ``i`` has class ``i % 10``).
    length: samples per sequence.
    seed: seed of the local numpy generator (the result depends on nothing else).

  Returns:
    ``(x, y)``: float32 ``(num_examples, length)`` and int32 ``(num_examples,)``.

  Example:
    >>> x, y = make_mnist1d(num_examples=100)
    >>> x.shape, y.shape
    ((100, 40), (100,))
  """
  if num_examples < 1 or length < 2:
    raise ValueError(f"need num_examples >= 1 and length >= 2; got {num_examples}, {length}.")
  rng = np.random.default_rng(seed)
  y = np.arange(num_examples) % len(TEMPLATES)
  x = np.stack([_transform(TEMPLATES[label], rng, length) for label in y])
  order = rng.permutation(num_examples)
  return x[order].astype(np.float32), y[order].astype(np.int32)
