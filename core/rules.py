"""Value rules for config settings: type and range, with one-line errors naming the key.

A dataclass declares each setting's rule once, with its default: ``x: int = setting(1,
integer(1))``. The run config (``training.config``) reads YAML through the rules
(``Rule.apply``: ``train.lr: expected a number > 0, got 'fast'``); component settings (the
MoE layer's ``MoEConfig``, each router's ``Options``) are checked by ``check_fields``
(``Rule.check``: ``moe.router_options.delta=1.5: must be a cosine in (0, 1)``). Checks that
span settings stay explicit next to the dataclass.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Optional, Tuple

from core.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one setting accepts. ``kind`` is int, number, bool, str, str_list, str_lists or mapping;
    numbers may be bounded (``low``/``high``, open when ``*_open``); strings and list items
    may be limited to ``choices``; ``optional``: None (unset) is accepted too; ``noun``
    names the value in messages: a number's noun with its article (``a cosine``), the plural
    of a choice (``rewards``: ``valid rewards are batch, token``)."""

    kind: str
    low: Optional[float] = None
    low_open: bool = False
    high: Optional[float] = None
    high_open: bool = False
    choices: Tuple[str, ...] = ()
    optional: bool = False
    noun: str = ""

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "mapping":
            return "a mapping"
        if self.kind == "str":
            return f"one of {', '.join(self.choices)}" if self.choices else "a non-empty string"
        if self.kind == "str_list":
            return f"a list of {', '.join(self.choices)}" if self.choices else "a list of strings"
        if self.kind == "str_lists":
            return "a list of lists of strings"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        noun = self.noun or ("an integer" if self.kind == "int" else "a number")
        return f"{noun} {' and '.join(bounds)}".rstrip()

    def apply(self, path: str, value: Any) -> Any:
        """The checked value (ints become floats for number settings), or ConfigError;
        numbers must be finite."""
        if self._accepts(value):
            if value is None and self.optional:
                return None
            if self.kind == "number":
                return float(value)
            if self.kind == "str_list":
                return list(value or [])
            if self.kind == "str_lists":
                return [list(items) for items in value or []]
            return value
        raise ConfigError(f"{path}: expected {_finite_wording(self.describe(), value)}, got {value!r}")

    def check(self, path: str, value: Any) -> None:
        """ConfigError ``path=value: <what is allowed>`` unless the rule accepts ``value``
        (the wording of component settings)."""
        if not self._accepts(value):
            raise ConfigError(f"{path}={value!r}: {self.requirement(value)}")

    def requirement(self, value: Any = None) -> str:
        """What is allowed, as component settings word it (``must be in (0, 1]``, ``valid
        values are a, b``); ``a finite number`` when ``value`` is NaN or +-inf."""
        if self.kind == "str" and self.choices:
            return f"valid {self.noun or 'values'} are {', '.join(self.choices)}"
        if self.kind == "int" and self.low == 1 and self.high is None:
            return "must be a positive integer"
        if self.kind == "number" and self.low is not None and self.high is not None:
            interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            noun = self.noun or ("a finite number" if _not_finite(value) else "")
            return f"must be {noun} in {interval}" if noun else f"must be in {interval}"
        return f"must be {_finite_wording(self.describe(), value)}"

    def type_only(self) -> "Rule":
        """The same kind without bounds or choices (type checks that leave values to another check)."""
        return Rule(self.kind, optional=self.optional)

    def _accepts(self, value: Any) -> bool:
        if value is None and self.optional:
            return True
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
        if self.kind == "str_lists":
            lists = [] if value is None else value
            return isinstance(lists, list) and all(
                isinstance(items, list) and items and all(isinstance(v, str) and v for v in items) for items in lists)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if _not_finite(value):
            return False
        if abs(value) > sys.float_info.max:  # an int no float can hold
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _not_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _finite_wording(expected: str, value: Any) -> str:
    """``a number ...`` reads ``a finite number ...`` when the refused value is NaN or +-inf."""
    return expected.replace("a number", "a finite number", 1) if _not_finite(value) else expected


def setting(default: Any, rule: Rule) -> Any:
    """A dataclass field carrying its rule (lists and mappings get a fresh copy per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def rules_of(cls) -> Dict[str, Rule]:
    """The rules a dataclass declares, by field name (fields without a rule left out)."""
    return {f.name: f.metadata["rule"] for f in fields(cls) if "rule" in f.metadata}


def check_fields(values: Any, section: str) -> None:
    """ConfigError for the first field of the dataclass instance ``values`` that its rule
    refuses, named ``<section>.<field>`` (component wording: ``Rule.check``)."""
    for name, rule in rules_of(type(values)).items():
        rule.check(f"{section}.{name}", getattr(values, name))


def integer(low: int = 0, high: Optional[int] = None) -> Rule:
    return Rule("int", low=low, high=high)


def number(low: Optional[float] = 0.0, low_open: bool = False, high: Optional[float] = None,
           high_open: bool = False, noun: str = "") -> Rule:
    return Rule("number", low=low, low_open=low_open, high=high, high_open=high_open, noun=noun)


def optional(rule: Rule) -> Rule:
    """``rule``, or None (a setting left unset)."""
    return replace(rule, optional=True)


def one_of(*choices: str, noun: str = "") -> Rule:
    return Rule("str", choices=choices, noun=noun)


def names(*choices: str) -> Rule:
    return Rule("str_list", choices=choices)


def name_lists() -> Rule:
    """A list of non-empty lists of non-empty strings (e.g. each node's domains)."""
    return Rule("str_lists")


FLAG = Rule("bool")
TEXT = Rule("str")
MAPPING = Rule("mapping")
