"""notebooks/treemaml.ipynb executes end to end (at small size) with nbclient."""

import re

from tests.notebooks.execute import execute_small


def test_treemaml_notebook_compares_maml_true_and_learned_trees():
  outputs = execute_small("treemaml.ipynb")
  text = "".join(o.get("text", "") for o in outputs)
  for name in ("maml", "treemaml (true tree)", "treemaml (learned tree)"):
    assert f"{name}: query MSE after each inner step" in text
  assert "nan" not in text.lower()
  # The change against MAML carries its sign: a lower query MSE is a negative change.
  changes = re.findall(r"query MSE [\d.e+-]+ after 3 steps, ([+-][\d.]+)% vs MAML \((\w+)\)",
                       text)
  assert len(changes) == 2, text[-2000:]   # the true and the learned tree
  for change, word in changes:
    assert (float(change) < 0) == (word == "lower"), (change, word)
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
