"""notebooks/gn_generalization.ipynb executes end to end (at small size) with nbclient."""

import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gn_generalization_notebook_runs_and_plots_each_finding():
  notebook = nbformat.read(os.path.join(REPO, "notebooks", "gn_generalization.ipynb"),
                           as_version=4)
  parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(parameters) == 1
  parameters[0].source = "SMALL = True"
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": REPO}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  for expected in ("train loss after 10 steps", "test accuracy", "NTK similarity"):
    assert expected in text
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
