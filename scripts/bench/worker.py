"""The entry point of each spawned benchmark process: one framework, its cases timed round-robin."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from scripts.bench.common import BenchSettings, time_round_robin


def run_group(group: str, settings: BenchSettings, dispatches: Sequence[str],
              peers: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """``torch``: the dense reference, our layer in ``dispatches`` and the ``peers``, all in
    this process so their ratios share one round-robin; ``ms-graph`` / ``ms-pynative``:
    MindSpore's dense reference and our layer."""
    if group == "torch":
        from scripts.bench import peer_cases, torch_cases
        built = torch_cases.cases(settings, dispatches) + (peer_cases.cases(settings, peers) if peers else [])
    else:
        from scripts.bench import mindspore_cases
        built = mindspore_cases.cases(settings, group.split("-", 1)[1], dispatches)
    rows = time_round_robin(built, settings)
    for row in rows:
        row["process"] = group
    return rows
