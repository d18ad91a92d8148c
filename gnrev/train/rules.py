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
    kind: ``"int"``, ``"number"`` (finite), ``"bool"``, ``"str"``, ``"choice"``, ``"sequence"``
      or ``"custom"`` (allows anything here; the field's own check judges it).
    low, high: inclusive bounds of numbers (exclusive with ``low_open`` / ``high_open``).
    choices: the values of a ``"choice"``, or a function returning them (called at each check, so
      that registries filled after import count).
    optional: None is allowed too.
    element, non_empty: the rule of each value of a ``"sequence"``; whether it must not be empty.
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
    return sorted(self.choices() if callable(self.choices) else self.choices)

  def allows(self, value: Any) -> bool:
    """Whether ``value`` obeys the rule."""
    if self.kind == "custom":
      return True
    if value is None:
      return self.optional
    if self.kind == "bool":
      return isinstance(value, (bool, np.bool_))
    if self.kind in ("str", "choice"):
      return isinstance(value, str) and (self.kind == "str" or value in self.allowed_choices())
    if self.kind == "sequence":
      return (isinstance(value, (list, tuple)) and (len(value) or not self.non_empty) and
              all(self.element.allows(v) for v in value))
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number))
        or (self.kind == "int" and not isinstance(value, (int, np.integer)))
        or not math.isfinite(value)
        or (self.low is not None and (value < self.low or (self.low_open and value == self.low)))):
      return False
    return self.high is None or value < self.high or (not self.high_open and value == self.high)

  def describe(self) -> str:
    """The allowed values in words, for error messages."""
    words = {"custom": "see its documentation", "bool": "True or False", "str": "a string"}
    if self.kind in words:
      text = words[self.kind]
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


def not_allowed(field: str, value: Any, expected: str) -> str:
  """The message refusing ``value`` of ``field``: ``"<field> = <value> is not allowed; ..."``."""
  return f"{field} = {value!r} is not allowed; expected {expected}."


def did_you_mean(name: str, allowed: Sequence[str], prefix: str = "") -> str:
  """`` Did you mean <prefix><closest>?`` for the allowed name closest to ``name``, or ``""``."""
  close = difflib.get_close_matches(str(name), list(allowed), n=1)
  return f" Did you mean {prefix}{close[0]}?" if close else ""
