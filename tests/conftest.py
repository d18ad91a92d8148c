"""Test set-up: 8 CPU devices for sharding tests, float64 on request.

XLA_FLAGS must be set before jax initialises its backends, hence at import time here.
Mark a test ``@pytest.mark.x64`` to run it with ``jax_enable_x64``.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see gnrev/main.py
# One persistent JAX compilation cache for the whole suite: pytest-xdist workers and the
# launcher subprocesses that tests start compile many of the same programs (the same smoke
# configs run in-process and through ``python -m gnrev.main``). A size limit turns on jax's file
# lock (the ``filelock`` package), so concurrent workers never read a half-written entry.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "gnrev-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024**3))

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _x64_on_request(request):
  enabled = request.node.get_closest_marker("x64") is not None
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", enabled)
  yield
  jax.config.update("jax_enable_x64", previous)
