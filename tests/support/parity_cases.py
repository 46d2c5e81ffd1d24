"""Which parity cases run in GRAPH_MODE. Each case compiles twice there (forward, then
forward+backward: seconds each), so the GRAPH_MODE stage runs a subset that still meets
every router, dispatch mode, drop policy and expert type; PyNative runs every case."""
from __future__ import annotations

import os
from typing import Iterable, List, Sequence

import pytest

IN_GRAPH_MODE = os.environ.get("MOE_MS_MODE", "pynative") == "graph"
PYNATIVE_ONLY = pytest.mark.skipif(IN_GRAPH_MODE, reason="PyNative only: GRAPH_MODE runs a subset of the "
                                   "parity cases (tests/support/parity_cases.py)")


def graph_subset(values: Sequence, ids: Sequence[str], in_graph: Iterable[str]) -> List:
    """``pytest.param`` per value with its id; a value whose id is not in ``in_graph`` is
    skipped in GRAPH_MODE."""
    keep = set(in_graph)
    unknown = keep - set(ids)
    assert not unknown, f"graph subset names unknown cases: {sorted(unknown)}"
    return [pytest.param(value, id=name, marks=() if name in keep else PYNATIVE_ONLY)
            for value, name in zip(values, ids)]
