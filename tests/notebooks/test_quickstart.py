"""notebooks/quickstart.ipynb executes end to end (at small size) with nbclient."""

from tests.notebooks.execute import execute_small


def test_quickstart_notebook_runs_and_shows_the_curves():
  outputs = execute_small("quickstart.ipynb")
  assert any("test accuracy" in o.get("text", "") for o in outputs)
  assert "image/png" in outputs[-1].get("data", {})
