"""Every ``>>>`` example runs: the docstrings of every gnrev module and the pages of docs/.

One test per module or page, at the sizes the examples use (tiny), with float64 off (the
autouse fixture of tests/conftest.py). Examples run in their module's namespace, as
``python -m doctest`` would; the docs pages start from an empty namespace and import what they
use. A docstring may not show an example that is not executed: literal ``Example::`` blocks
are rejected.
"""

import doctest
import importlib
import os
import pkgutil
import re

import pytest

import gnrev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = sorted(m.name for m in pkgutil.walk_packages(gnrev.__path__, "gnrev.")
                 if m.name != "gnrev.main")   # main defines absl flags at import
PAGES = sorted(n for n in os.listdir(DOCS) if n.endswith(".md"))


def _module_tests(name: str) -> list:
  module = importlib.import_module(name)
  return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module) if t.examples]


def _page_test(page: str):
  path = os.path.join(DOCS, page)
  with open(path) as f:
    text = _FENCE.sub("", f.read())   # a closing ``` would read as expected output
  return doctest.DocTestParser().get_doctest(text, {}, page, path, 0)
_FENCE = re.compile(r"^\s*(```|:::).*$", re.MULTILINE)


def _run(tests) -> tuple[int, str]:
  # verbose=False: doctest's default reads "-v" from sys.argv, so ``pytest -v`` would report
  # every passing example as a failure.
  runner = doctest.DocTestRunner(verbose=False, optionflags=FLAGS)
  report = []
  for test in tests:
    runner.run(test, out=report.append)
  return runner.summarize(verbose=False).attempted, "".join(report)


# Collected from the sources, so a module or page gains its test with its first example.
EXAMPLE_MODULES = [name for name in MODULES if _module_tests(name)]
EXAMPLE_PAGES = [page for page in PAGES if _page_test(page).examples]


def test_examples_are_found():
  assert len(EXAMPLE_MODULES) >= 20 and len(EXAMPLE_PAGES) >= 10


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_module_docstring_examples(name):
  _, report = _run(_module_tests(name))
  assert not report, report


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_docs_page_examples(page):
  _, report = _run([_page_test(page)])
  assert not report, report


def test_no_docstring_shows_an_unexecuted_example():
  literal = re.compile(r"^\s*Examples?::\s*$", re.MULTILINE)
  offenders = []
  for name in MODULES + ["gnrev.main"]:
    path = importlib.util.find_spec(name).origin
    with open(path) as f:
      if literal.search(f.read()):
        offenders.append(os.path.relpath(path, REPO))
  assert not offenders, f"literal Example:: blocks (write >>> examples instead): {offenders}"
