"""What a config field may hold: :class:`Rule`, shared by the trainer's start-up checks
(:mod:`gnrev.train.validation`) and the optimizer registry's option ranges
(:data:`gnrev.train.optimizers.OPTIMIZERS`). Imports no JAX."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Sequence, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one config field may hold.

  Attributes:
    kind: ``"int"``, ``"number"`` (finite int or float), ``"bool"``, ``"str"``, ``"choice"``,
      ``"sequence"`` (a list or tuple of ``element`` values, not empty with ``non_empty``) or
      ``"custom"`` (checked by its own code below, e.g. exact GN's ``allocation``).
    low, high: inclusive bounds of numbers (exclusive with ``low_open`` / ``high_open``).
    choices: the allowed values of a ``"choice"`` (or a function returning them, read late so
      that registries filled after import count).
    optional: ``None`` is allowed too.
    element: the rule of each value of a ``"sequence"``.
    non_empty: a ``"sequence"`` must hold at least one value.
  """
  kind: str
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  choices: Union[Sequence[Any], Callable[[], Sequence[Any]]] = ()
  optional: bool = False
  element: "Rule | None" = None
  non_empty: bool = False

  def allowed_choices(self) -> list:
    choices = self.choices() if callable(self.choices) else self.choices
    return sorted(choices)

  def allows(self, value: Any) -> bool:
    if self.kind == "custom":
      return True
    if value is None:
      return self.optional
    if self.kind == "bool":
      return isinstance(value, (bool, np.bool_))
    if self.kind == "str":
      return isinstance(value, str)
    if self.kind == "choice":
      return isinstance(value, str) and value in self.allowed_choices()
    if self.kind == "sequence":
      return (isinstance(value, (list, tuple)) and (len(value) or not self.non_empty) and
              all(self.element.allows(v) for v in value))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
      return False
    if self.kind == "int" and not isinstance(value, (int, np.integer)):
      return False
    if not math.isfinite(value):
      return False
    if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
      return False
    return self.high is None or (value < self.high or (not self.high_open and
                                                       value == self.high))

  def describe(self) -> str:
    if self.kind == "custom":
      text = "see its documentation"
    elif self.kind == "bool":
      text = "True or False"
    elif self.kind == "str":
      text = "a string"
    elif self.kind == "choice":
      text = "one of " + ", ".join(repr(c) for c in self.allowed_choices())
    elif self.kind == "sequence":
      text = (f"a {'non-empty ' if self.non_empty else ''}list or tuple, each "
              f"{self.element.describe()}")
    else:
      text = "an int" if self.kind == "int" else "a finite number"
      if self.low is not None and self.high is not None:
        text += (f" in {'(' if self.low_open else '['}{self.low}, {self.high}"
                 f"{')' if self.high_open else ']'}")
      elif self.low is not None:
        text += f" {'>' if self.low_open else '>='} {self.low}"
      elif self.high is not None:
        text += f" {'<' if self.high_open else '<='} {self.high}"
    return text + (" or None" if self.optional else "")


def integer(low: int, optional: bool = False) -> Rule:
  return Rule("int", low=low, optional=optional)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Rule:
  return Rule("number", low=low, high=high, low_open=low_open, high_open=high_open)


def choice(choices) -> Rule:
  return Rule("choice", choices=choices)


def optional(rule: Rule) -> Rule:
  """``rule`` or None."""
  return dataclasses.replace(rule, optional=True)


def of_default(default: Any) -> Rule | None:
  """The rule of an option that has none of its own: the type of its default, if it has one."""
  if isinstance(default, bool):
    return BOOL
  if isinstance(default, (int, float)):
    return Rule("number")
  return Rule("str") if isinstance(default, str) else None


BOOL = Rule("bool")
POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
UNIT = number(0, 1, high_open=True)   # momentum-like coefficients


def did_you_mean(name: str, allowed: Sequence[str], prefix: str = "") -> str:
  """`` Did you mean <prefix><closest>?`` for the allowed name closest to ``name``, or ``""``."""
  close = difflib.get_close_matches(str(name), list(allowed), n=1)
  return f" Did you mean {prefix}{close[0]}?" if close else ""
