"""Every notebook opens with a Colab badge, an install cell and a size cell, all agreeing with
the repository address in pyproject.toml (the one place it is defined)."""

import os
import re

import pytest

from tests.notebooks.execute import NOTEBOOKS, REPO, SIZE_ENV, read

NAMES = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))


def repository_url() -> str:
  """``[project.urls] Repository`` of pyproject.toml (by re: tomllib needs Python 3.11)."""
  with open(os.path.join(REPO, "pyproject.toml")) as f:
    return re.search(r'^Repository = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def test_every_notebook_is_executed_by_a_test():
  tested = {n for n in NAMES
            if os.path.exists(os.path.join(REPO, "tests", "notebooks", f"test_{n[:-6]}.py"))}
  assert tested == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_badge_install_and_size_cells(name):
  cells = read(name).cells
  url = repository_url()
  owner_repo = url.removeprefix("https://github.com/")
  assert cells[0].cell_type == "markdown"
  badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}"
  assert cells[0].source.count(badge) == 1
  install = cells[1].source
  assert f'GNREV_REPOSITORY = "{url}"' in install
  assert 'find_spec("gnrev") is None' in install and "git+{GNREV_REPOSITORY}" in install
  assert "parameters" in cells[2].metadata.get("tags", [])
  assert SIZE_ENV in cells[2].source
  # Nothing else in the notebook spells the address differently.
  for cell in cells:
    for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", cell.source):
      assert found == url, f"{name}: {found} differs from pyproject's {url}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
  assert all(not c.get("outputs") for c in read(name).cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_has_a_unique_id(name):
  notebook = read(name)
  ids = [cell.get("id") for cell in notebook.cells]
  assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5), "cell ids need nbformat 4.5"
  assert all(ids) and len(set(ids)) == len(ids), f"{name}: cells without or sharing an id"
