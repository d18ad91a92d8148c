"""Every code block of README.md and docs/*.md works as written, from the repository root.

The rule for what runs:

* A ```python block is executed, each block on its own in an empty namespace (blocks are
  self-contained, at tiny sizes), with the repository root as working directory.
* A ```pycon block of docs/ is a doctest, run by tests/test_doctests.py.
* A ```bash block shows commands that train or benchmark for minutes to hours, so none is run.
  Each ``python`` command in it is checked as far as that is possible without running it:

  - ``python -m gnrev.main ...``: the launcher's own flag parser accepts the command line: the
    config file loads with its argument (``:smoke``, ``:model=mlp,seed=0``), every
    ``--config.<field>`` override names a field of that config, every other flag is one the
    launcher defines, with a value it accepts.
  - ``python experiments/X.py``, ``python benchmarks/X.py``, ``python -m benchmarks.X``: ``--help``
    exits 0 and names every flag the command shows, every ``--sizes`` value shown is one of the
    sizes the help lists, and a ``--config=FILE[:arg]`` loads.
  - ``pip install -e ".[extras]"``: every extra is declared in pyproject.toml.
  - Anything else (``python -m pytest``, ``python -m sphinx``, ``python3 -m venv``) is a tool,
    not gnrev; the test command is what runs this file.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs"))
                               if n.endswith(".md"))
_BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_SHELL_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get(
    "PYTHONPATH")])), "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}


def blocks(language: str) -> list[tuple[str, str]]:
  """``(where, code)`` of every ``language`` block, ``where`` = ``page:line``."""
  found = []
  for page in PAGES:
    with open(os.path.join(REPO, page)) as f:
      text = f.read()
    for match in _BLOCK.finditer(text):
      if match.group(1) == language:
        found.append((f"{page}:{text.count(chr(10), 0, match.start()) + 1}", match.group(2)))
  return found


def shell_commands() -> list[tuple[str, list[str]]]:
  """``(where, argv)`` of every ``python`` / ``pip`` command in the bash blocks.

  Continuation lines are joined, comments dropped, shell variables given a placeholder value
  (``$i`` -> ``0``) and the command cut at the first shell operator (``&&``, ``>``, ``&``, ...).
  """
  commands = []
  for where, code in blocks("bash"):
    for line in code.replace("\\\n", " ").splitlines():
      line = _SHELL_VARIABLE.sub("0", line)
      lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
      lexer.whitespace_split, lexer.commenters = True, "#"
      argv = []
      for token in lexer:
        if set(token) <= set("&|;<>()"):   # a shell operator ends the command
          if argv:
            commands.append((where, argv))
          argv = []
        elif argv or re.fullmatch(r"python3?|pip", token):
          argv.append(token)
      if argv:
        commands.append((where, argv))
  return commands


def _launcher(argv):
  return argv[1:3] == ["-m", "gnrev.main"]


def _script(argv):
  return (len(argv) > 1 and re.fullmatch(r"(experiments|benchmarks)/\w+\.py", argv[1])) or (
      argv[1:2] == ["-m"] and argv[2].startswith("benchmarks."))


PYTHON_BLOCKS = blocks("python")
COMMANDS = shell_commands()
LAUNCHER_COMMANDS = [(w, argv) for w, argv in COMMANDS if _launcher(argv)]
SCRIPT_COMMANDS = [(w, argv) for w, argv in COMMANDS if _script(argv)]


def test_the_pages_show_blocks_of_each_kind():
  assert len(PYTHON_BLOCKS) >= 6 and len(LAUNCHER_COMMANDS) >= 8 and len(SCRIPT_COMMANDS) >= 4


@pytest.mark.parametrize("where,code", PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_block_runs_as_written(where, code, monkeypatch):
  monkeypatch.chdir(REPO)
  exec(compile(code, where, "exec"), {"__name__": "__docs_block__"})   # noqa: S102


# Parses each launcher command line with gnrev.main's own flags, in a fresh interpreter (the
# launcher defines absl flags at import). The config flag is defined per command line, as
# ml_collections needs to see its overrides; the launcher's other flags are parsed by their own
# parsers.
_PARSE_LAUNCHER_FLAGS = """
import json, sys
from absl import flags
import gnrev.main
from gnrev import config_flag
from gnrev.train import configs

results = []
for argv in json.loads(sys.argv[1]):
  try:
    config_flags = flags.FlagValues()
    config_flag.define_config_flag("config", flag_values=config_flags, sys_argv=argv)
    rest = config_flags(argv, known_only=True)[1:]
    config_flag.finish_config_flag("config", config_flags)
    for arg in rest:
      name, _, value = arg.lstrip("-").partition("=")
      if name not in gnrev.main.FLAGS:
        raise ValueError(f"--{name} is not a flag of gnrev.main")
      flag = gnrev.main.FLAGS[name]
      flag.parse(value if value or not flag.boolean else "true")
    results.append(None)
  except Exception as e:
    results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
"""


def test_every_launcher_command_parses_with_the_launchers_flags():
  argvs = sorted({json.dumps(["gnrev.main"] + argv[3:]) for _, argv in LAUNCHER_COMMANDS})
  argvs = [json.loads(a) for a in argvs]
  output = subprocess.run([sys.executable, "-c", _PARSE_LAUNCHER_FLAGS, json.dumps(argvs)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert output.returncode == 0, output.stderr[-3000:]
  results = json.loads(output.stdout.strip().splitlines()[-1])
  failures = [f"{' '.join(argv)}: {error}" for argv, error in zip(argvs, results) if error]
  assert not failures, "\n".join(failures)


def test_every_script_command_exists_with_the_flags_and_sizes_shown():
  heads = sorted({tuple(argv[1:3] if argv[1] == "-m" else argv[1:2]) for _, argv in
                  SCRIPT_COMMANDS})
  processes = {head: subprocess.Popen([sys.executable, *head, "--help"], cwd=REPO, env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for head in heads}
  helps = {}
  for head, process in processes.items():
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"{' '.join(head)} --help: {err[-2000:]}"
    helps[head] = out
  problems = []
  for where, argv in SCRIPT_COMMANDS:
    head = tuple(argv[1:3] if argv[1] == "-m" else argv[1:2])
    args = argv[1 + len(head):]
    for i, arg in enumerate(args):
      if not arg.startswith("--"):
        continue
      name, _, value = arg.partition("=")
      if not value and i + 1 < len(args) and not args[i + 1].startswith("--"):
        value = args[i + 1]
      if name.startswith("--config."):
        continue   # an override, checked with the config below
      if not re.search(rf"{re.escape(name)}\b", helps[head]):
        problems.append(f"{where}: {' '.join(head)} has no flag {name}")
      if name == "--sizes":
        problems += [f"{where}: {' '.join(head)} lists no size {size!r}"
                     for size in value.split(",") if not re.search(rf"\b{size}\b", helps[head])]
      if name == "--config":
        path, _, config_arg = value.partition(":")
        try:
          from gnrev.train import configs   # noqa: PLC0415 (only needed here)
          configs.load_config(os.path.join(REPO, path), config_arg or None)
        except Exception as e:  # noqa: BLE001 (reported below with the command)
          problems.append(f"{where}: --config={value}: {type(e).__name__}: {e}")
  assert not problems, "\n".join(problems)


def test_every_pip_extra_shown_is_declared():
  with open(os.path.join(REPO, "pyproject.toml")) as f:
    declared = set(re.findall(r"^(\w[\w-]*) = \[", f.read().split(
        "[project.optional-dependencies]")[1].split("\n[")[0], re.MULTILINE))
  shown = {extra for _, argv in COMMANDS if argv[0] == "pip"
           for arg in argv for extra in re.findall(r"\.\[([\w,-]+)\]", arg)
           for extra in extra.split(",")}
  assert shown and shown <= declared, f"undeclared extras {shown - declared}"
