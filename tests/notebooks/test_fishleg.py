"""notebooks/fishleg.ipynb executes end to end (at small size) with nbclient."""

from tests.notebooks.execute import execute_small


def test_fishleg_notebook_trains_both_chains_and_reads_the_learned_diagonal():
  outputs = execute_small("fishleg.ipynb")
  text = "".join(o.get("text", "") for o in outputs)
  for expected in ("fishleg: final train loss", "adam: final train loss", "diag(Q) in"):
    assert expected in text
  assert "nan" not in text.lower()
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
