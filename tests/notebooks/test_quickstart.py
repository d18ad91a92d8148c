"""notebooks/quickstart.ipynb executes end to end (at small size) with nbclient."""

import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quickstart_notebook_runs_and_shows_the_curves():
  # The kernel inherits this process's environment, XLA_FLAGS (8 devices) from tests/conftest.py.
  notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1
  parameters[0].source = "SMALL = True"
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("test accuracy" in o.get("text", "") for o in outputs)
  assert "image/png" in outputs[-1].get("data", {})
