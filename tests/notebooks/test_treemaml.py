"""notebooks/treemaml.ipynb executes end to end (at small size) with nbclient."""

from tests.notebooks.execute import execute_small


def test_treemaml_notebook_compares_maml_true_and_learned_trees():
  outputs = execute_small("treemaml.ipynb")
  text = "".join(o.get("text", "") for o in outputs)
  for name in ("maml", "treemaml (true tree)", "treemaml (learned tree)"):
    assert f"{name}: query MSE after each inner step" in text
  assert "nan" not in text.lower()
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
