"""Value rules for config settings: type and range, with one-line errors naming the key."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from core.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one setting accepts. ``kind`` is int, number, bool, str, str_list or mapping;
    numbers may be bounded (``low``/``high``, open when ``*_open``); strings and list items
    may be limited to ``choices``."""

    kind: str
    low: Optional[float] = None
    low_open: bool = False
    high: Optional[float] = None
    high_open: bool = False
    choices: Tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "mapping":
            return "a mapping"
        if self.kind == "str":
            return f"one of {', '.join(self.choices)}" if self.choices else "a non-empty string"
        if self.kind == "str_list":
            return f"a list of {', '.join(self.choices)}" if self.choices else "a list of strings"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} {' and '.join(bounds)}".rstrip()

    def apply(self, path: str, value: Any) -> Any:
        """The checked value (ints become floats for number settings), or ConfigError;
        numbers must be finite."""
        if self._accepts(value):
            if self.kind == "number":
                return float(value)
            if self.kind == "str_list":
                return list(value or [])
            return value
        expected = self.describe()
        if isinstance(value, float) and not math.isfinite(value):
            expected = expected.replace("a number", "a finite number", 1)
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")

    def _accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "mapping":
            return isinstance(value, dict)
        if self.kind == "str":
            return isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)
        if self.kind == "str_list":
            items = [] if value is None else value
            return isinstance(items, list) and all(
                isinstance(v, str) and v and (not self.choices or v in self.choices) for v in items)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):  # NaN or +-inf
            return False
        if abs(value) > sys.float_info.max:  # an int no float can hold
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def setting(default: Any, rule: Rule) -> Any:
    """A dataclass field carrying its rule (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def integer(low: int = 0, high: Optional[int] = None) -> Rule:
    return Rule("int", low=low, high=high)


def number(low: float = 0.0, low_open: bool = False, high: Optional[float] = None,
           high_open: bool = False) -> Rule:
    return Rule("number", low=low, low_open=low_open, high=high, high_open=high_open)


def one_of(*choices: str) -> Rule:
    return Rule("str", choices=choices)


def names(*choices: str) -> Rule:
    return Rule("str_list", choices=choices)


FLAG = Rule("bool")
TEXT = Rule("str")
MAPPING = Rule("mapping")
