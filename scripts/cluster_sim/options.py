"""What a sweep may choose, and the comma-separated option values."""
from __future__ import annotations

from typing import List, Sequence

from scripts.cluster_sim.outcome import Failure

ROUTERS = ("switch", "hash", "locmoe", "locmoe_plus")
ALL_TO_ALL = ("flat", "hierarchical")
BACKENDS = ("torch", "mindspore")


def parse_list(text: str, choices: Sequence[str], option: str) -> List[str]:
    """A comma-separated list of ``choices`` (one-line error otherwise)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if item not in choices]
    if not items or bad:
        raise Failure(f"{option}={text!r}: expected a comma-separated list of {', '.join(choices)}")
    return items


def parse_ints(text: str, option: str, minimum: int) -> List[int]:
    """A comma-separated list of integers >= ``minimum`` (one-line error otherwise)."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise Failure(f"{option}={text!r}: expected a comma-separated list of whole numbers >= {minimum}")
    return values
