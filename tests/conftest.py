"""Test set-up: 8 CPU devices for sharding tests, float64 on request.

XLA_FLAGS must be set before jax initialises its backends, hence at import time here.
Mark a test ``@pytest.mark.x64`` to run it with ``jax_enable_x64``.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see gnrev/main.py

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _x64_on_request(request):
  enabled = request.node.get_closest_marker("x64") is not None
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", enabled)
  yield
  jax.config.update("jax_enable_x64", previous)
