"""The results files of an experiment: ``<name>.json`` (every number), ``<name>_table.md``
(the table, under one provenance line per call that contributed) and ``<name>.png``, by
default under docs/results; and the earlier JSON that a later call adds to."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from scripts.reporting.figures import save_figure
from scripts.reporting.provenance import ROOT, provenance

RESULTS = ROOT / "docs" / "results"


def write_results(name: str, payload: Mapping[str, Any], table: str, figure=None,
                  calls: Sequence[Mapping[str, Any]] = (), out_dir: Path = RESULTS) -> Dict[str, Path]:
    """``<out_dir>/<name>.json`` (``payload``), ``<name>_table.md`` (one ``provenance`` line per
    entry of ``calls``, then ``table``) and, with a ``figure``, ``<name>.png``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "table": out_dir / f"{name}_table.md"}
    paths["json"].write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    header = "".join(f"- {provenance(call)}\n" for call in calls) + ("\n" if calls else "")
    paths["table"].write_text(header + table.rstrip("\n") + "\n", encoding="utf-8")
    if figure is not None:
        paths["plot"] = out_dir / f"{name}.png"
        save_figure(figure, paths["plot"])
    return paths


def load_payload(name: str, out_dir: Path = RESULTS) -> Dict[str, Any]:
    """``<out_dir>/<name>.json`` as an earlier call wrote it, or {"results": {}, "runs": []}: a
    later call adds its seeds to it instead of running the earlier ones again."""
    path = Path(out_dir) / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"results": {}, "runs": []}


def merge_runs(into: Dict[str, Dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> None:
    """Add {arm: {seed: result}} to ``into`` in place: an (arm, seed) already there is replaced,
    every other one kept."""
    for arm, runs in new.items():
        into.setdefault(arm, {}).update(runs)


def run_info(json_path: Path) -> Dict[str, object]:
    """The ``machine`` and ``command`` of an earlier results JSON (what --report-only keeps, so
    that a re-drawn report still names the run's date and load); {} when there is none."""
    if not Path(json_path).is_file():
        return {}
    earlier = json.loads(Path(json_path).read_text(encoding="utf-8"))
    return {key: earlier[key] for key in ("machine", "command") if key in earlier}


def call_history(json_path: Path, seeds: Sequence[int], trained: Sequence[int], this_call: dict) -> List[dict]:
    """The calls behind a results JSON, each {machine, command}: the earlier JSON's (its ``runs``,
    or its one ``machine`` and ``command``) when this call reuses any earlier run, then
    ``this_call`` when it trained anything."""
    earlier: List[dict] = []
    if set(trained) != set(seeds) and Path(json_path).is_file():
        before = json.loads(Path(json_path).read_text(encoding="utf-8"))
        earlier = before.get("runs") or ([run_info(json_path)] if "command" in before else [])
    return earlier + ([this_call] if trained else [])
