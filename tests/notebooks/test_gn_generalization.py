"""notebooks/gn_generalization.ipynb executes end to end (at small size) with nbclient."""

import re

from tests.notebooks.execute import execute_small


def test_gn_generalization_notebook_runs_and_plots_each_finding():
  outputs = execute_small("gn_generalization.ipynb")
  text = "".join(o.get("text", "") for o in outputs)
  for expected in ("train loss after 10 steps", "test accuracy", "NTK similarity"):
    assert expected in text
  # Each finding's verdict is printed, computed from the numbers above it.
  for finding in ("Finding 1 ", "Finding 2 ", "Finding 4 "):
    assert re.search(finding + r"(holds|does not hold)", text), finding
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
