"""Runs a notebook of notebooks/ end to end at small size (its `parameters` cell set to SMALL)."""

import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def execute_small(name: str) -> list:
  """Executes ``notebooks/<name>`` with ``SMALL = True`` and returns its code cells' outputs.

  The kernel inherits this process's environment, XLA_FLAGS (8 devices) from tests/conftest.py.
  """
  notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1, f"{name} needs exactly one cell tagged 'parameters'"
  parameters[0].source = "SMALL = True"
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  return outputs
