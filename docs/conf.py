"""Sphinx configuration for gnrev's documentation (built offline: no intersphinx, no downloads).

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # document this checkout's gnrev, installed or not

with open(os.path.join(ROOT, "pyproject.toml")) as f:
  _PYPROJECT = f.read()   # read with re, not tomllib: the docs also build on Python 3.10


def _field(name: str) -> str:
  return re.search(rf'^{name} = "([^"]+)"', _PYPROJECT, re.MULTILINE).group(1)


project = "gnrev"
author = "the gnrev authors"
copyright = "the gnrev authors, Apache-2.0"   # noqa: A001  (Sphinx's name)
release = version = _field("version")
REPOSITORY = _field("Repository")   # [project.urls]: the one place the address is defined

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 from the sphinx-mathjax-offline wheel, copied into _static: no CDN, so the
    # maths renders offline (.ci/check_rendered_math.py checks it in headless Chromium).
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "substitution"]
myst_heading_anchors = 3
myst_substitutions = {"repository": REPOSITORY}

# flax dataclass fields every module has; documenting them twice is a duplicate-object warning.
autodoc_default_options = {"members": True, "exclude-members": "param_dtype, parent, name"}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"gnrev {release}"
html_theme_options = {"description": "Second-order and meta-learning research in JAX",
                      "github_button": False, "extra_nav_links": {"Repository": REPOSITORY}}


def _registries_directive():
  """``{gnrev-registries}``: train.OPTIONS and train.TASKS as tables, read at build time."""
  from docutils import nodes   # noqa: PLC0415 (Sphinx's own dependencies)
  from docutils.statemachine import StringList   # noqa: PLC0415
  from sphinx.util.docutils import SphinxDirective   # noqa: PLC0415
  from gnrev import train   # noqa: PLC0415 (after sys.path is set above)

  class Registries(SphinxDirective):

    def run(self):
      lines = ["| optimizer | options (defaults) |", "|---|---|"]
      for name, options in train.OPTIONS.items():
        listed = ", ".join(f"`{k}={v!r}`" for k, v in options.items()) or "(none)"
        lines.append(f"| `{name}` | `learning_rate`, {listed} |")
      lines += ["", "| task | what it is |", "|---|---|"]
      for name, task in train.TASKS.items():
        summary = " ".join((task.__doc__ or "").strip().split("\n\n")[0].split())
        summary = re.sub(r":\w+:(`[^`]+`)", r"\1", summary)   # rst roles as plain code
        lines.append(f"| `{name}` | {summary.replace('|', '/')} |")
      container = nodes.container()
      self.state.nested_parse(StringList(lines, self.get_source_info()[0]), self.content_offset,
                              container)
      return container.children

  return Registries


def setup(app):
  app.add_directive("gnrev-registries", _registries_directive())
