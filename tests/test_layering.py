"""The package's layers: a lower layer never imports a higher one, not even inside a function."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gnrev"
BOTTOM = {"nets", "curvature", "data"}
WINGS = {"gn", "optim", "meta", "prune", "analysis", "graphs"}
TOP = {"train", "main", "config_flag"}
# The one allowed arrow between wings: pruning uses the optimizers' curvature.
WING_TO_WING = {("prune", "optim")}


def _imported_subpackages(path: pathlib.Path) -> set[str]:
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
      parts = name.split(".")
      if parts[0] == "gnrev" and len(parts) > 1:
        found.add(parts[1])
  return found


def _layer(name: str) -> int:
  return 0 if name in BOTTOM else 1 if name in WINGS else 2


@pytest.mark.parametrize("subpackage", sorted(BOTTOM | WINGS))
def test_subpackage_imports_only_its_own_or_lower_layers(subpackage):
  for path in sorted((PACKAGE / subpackage).rglob("*.py")):
    for other in _imported_subpackages(path) - {subpackage}:
      if other not in BOTTOM | WINGS | TOP:
        continue
      allowed = (_layer(other) < _layer(subpackage) or
                 (subpackage, other) in WING_TO_WING)
      assert allowed, f"{path.relative_to(PACKAGE.parent)} imports gnrev.{other}"


def _train_modules_imported(path: pathlib.Path) -> set[str]:
  """The modules of gnrev/train/ that ``path`` imports (anywhere in it, functions included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == "gnrev.train":
        found |= {alias.name for alias in node.names}
      elif node.module.startswith("gnrev.train."):
        found.add(node.module.split(".")[2])
    elif isinstance(node, ast.Import):
      found |= {alias.name.split(".")[2] for alias in node.names
                if alias.name.startswith("gnrev.train.")}
  return found


def test_the_trainer_modules_import_each_other_without_a_circle():
  modules = {path.stem: path for path in (PACKAGE / "train").glob("*.py")
             if path.stem != "__init__"}
  imports = {name: _train_modules_imported(path) & set(modules) for name, path in modules.items()}
  done, path = set(), []

  def visit(name):
    assert name not in path, "import circle in gnrev/train: " + " -> ".join(
        path[path.index(name):] + [name])
    if name in done:
      return
    path.append(name)
    for other in sorted(imports[name]):
      visit(other)
    path.pop()
    done.add(name)

  for name in sorted(modules):
    visit(name)
