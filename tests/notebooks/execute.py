"""Runs a notebook of notebooks/ end to end at small size, as a user's fresh kernel would.

The kernel starts in an empty temporary directory outside the repository (so a notebook that
reads files relative to the checkout fails here as it would on Colab), with
``GNREV_NOTEBOOK_SIZE=small`` (every notebook's size cell reads it) and this checkout first on
``PYTHONPATH`` (so the install cell finds gnrev and is skipped, and the code under test is this
checkout's). The notebook's cells are run exactly as committed.
"""

import os
import tempfile

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(REPO, "notebooks")
SIZE_ENV = "GNREV_NOTEBOOK_SIZE"


def read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def execute_small(name: str, timeout: int = 300) -> list:
  """Executes ``notebooks/<name>`` at small size and returns its code cells' outputs.

  The kernel inherits this process's environment, XLA_FLAGS (8 devices) from tests/conftest.py.
  """
  notebook = read(name)
  env = dict(os.environ)
  env[SIZE_ENV] = "small"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  env.setdefault("OPENBLAS_NUM_THREADS", "1")
  with tempfile.TemporaryDirectory(prefix="gnrev_notebook_") as cwd:
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute(
        cwd=cwd, env=env)
    left_behind = os.listdir(cwd)
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  errors = [o for o in outputs if o.output_type == "error"]
  assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
  assert not left_behind, f"{name} wrote {left_behind} into its working directory"
  return outputs
