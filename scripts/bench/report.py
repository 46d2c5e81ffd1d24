"""Ratios, target verdicts and the text table of scripts/bench_layer.py (framework-free)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from scripts.bench.torch_cases import DENSE
from scripts.reporting.tables import markdown_table

OURS = "ours torch dropless"
MS_MODES = ("ms-graph", "ms-pynative")
DENSE_LIMIT, PEER_LIMIT, MS_LIMIT, EXPERTS_LIMIT = 1.10, 1.0, 1.3, 1.3


def ratio(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    """a's time over b's: the median of per-round ratios when both were timed in the same
    rounds of one process (robust to a shared machine's drift), else the ratio of medians."""
    same_rounds = a.get("process") == b.get("process") and len(a["times_ms"]) == len(b["times_ms"])
    if same_rounds:
        return float(np.median([x / y for x, y in zip(a["times_ms"], b["times_ms"])]))
    return a["median_ms"] / b["median_ms"]


def timed(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {row["name"]: row for row in rows if "median_ms" in row}


def add_comparisons(rows: List[Dict[str, Any]]) -> None:
    """Ratio to the dense reference; output difference against the named case of ours."""
    by_name = timed(rows)
    dense = by_name.get(DENSE)
    for row in rows:
        row["vs_dense"] = ratio(row, dense) if dense and "median_ms" in row else None
        reference = by_name.get(row.get("compare_to") or "", {}).get("y")
        row["rel_diff"] = None
        if reference is not None and row.get("y") is not None and row["y"].shape == reference.shape:
            row["rel_diff"] = float(np.max(np.abs(row["y"] - reference)) / max(np.max(np.abs(reference)), 1e-30))


def verdict(value: float, limit: float, strict: bool = False) -> str:
    return "met" if (value < limit if strict else value <= limit) else "NOT met"


def point_targets(rows: List[Dict[str, Any]]) -> List[str]:
    """The per-size targets, each 'met' or 'NOT met' with the numbers: torch dropless within
    1.10x of dense, faster than every peer, MindSpore within 1.3x of torch (each mode)."""
    by_name = timed(rows)
    lines = []
    ours = by_name.get(OURS)
    if ours and ours.get("vs_dense") is not None:
        lines.append(f"torch dropless within {DENSE_LIMIT:.2f}x of dense: {ours['vs_dense']:.3f}x -> "
                     + verdict(ours["vs_dense"], DENSE_LIMIT))
    peers = [(row, ratio(row, ours)) for row in rows if ours and row["group"] == "peers" and "median_ms" in row]
    if peers:
        slower = [row["name"] for row, r in peers if r <= PEER_LIMIT]
        listed = ", ".join(f"{row['name']} {r:.2f}x" for row, r in peers)
        lines.append(f"torch dropless faster than every peer (peer/ours: {listed}) -> "
                     + ("met" if not slower else "NOT met (" + ", ".join(slower) + ")"))
    for mode in MS_MODES:
        for dispatch in ("dropless", "capacity"):
            ms_row, torch_row = by_name.get(f"ours {dispatch} {mode}"), by_name.get(f"ours torch {dispatch}")
            if ms_row and torch_row:
                r = ratio(ms_row, torch_row)
                lines.append(f"{mode} {dispatch} within {MS_LIMIT}x of torch: {r:.3f}x -> {verdict(r, MS_LIMIT)}")
    return lines


def own_dense(rows: List[Dict[str, Any]], row: Dict[str, Any]) -> Dict[str, Any]:
    """The dense reference timed in the same process as ``row`` (torch or MindSpore)."""
    return next((r for r in rows if r["dispatch"] == "dense" and r.get("process") == row.get("process")
                 and "median_ms" in r), {})


def expert_series(points: List[Dict[str, Any]]) -> Dict[tuple, Dict[int, float]]:
    """(tokens, case) -> {experts: time / the same process's dense time}: each point is its
    own process, whose speed drifts on a shared machine; the dense reference beside it
    (unchanged by the expert count) takes the drift out."""
    series: Dict[tuple, Dict[int, float]] = defaultdict(dict)
    for point in points:
        for row in point["rows"]:
            dense = own_dense(point["rows"], row)
            if row["name"].startswith("ours") and "median_ms" in row and dense:
                series[(point["settings"]["tokens"], row["name"])][point["settings"]["num_experts"]] = ratio(row, dense)
    return series


def expert_targets(points: List[Dict[str, Any]]) -> List[str]:
    """Per token count swept over expert counts: each of our cases' time over its process's
    dense time, relative to the same at the fewest experts, within 1.3x."""
    lines = []
    for (tokens, name), by_experts in sorted(expert_series(points).items()):
        if len(by_experts) < 2:
            continue
        fewest = min(by_experts)
        ratios = {e: t / by_experts[fewest] for e, t in sorted(by_experts.items())}
        worst = max(ratios.values())
        listed = ", ".join(f"{e}: {r:.2f}x" for e, r in ratios.items())
        lines.append(f"{name}, {tokens} tokens, (time / dense) over the {fewest}-expert value ({listed}) within "
                     f"{EXPERTS_LIMIT}x -> {verdict(worst, EXPERTS_LIMIT)}")
    return lines


def table(rows: List[Dict[str, Any]]) -> str:
    header = (f"{'case':<36} {'group':<11} {'dispatch':<8} {'median ms':>10} {'min ms':>9} {'x dense':>8} "
              f"{'rel |dy|':>9}  note")
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['name']:<36} {row['group']:<11} {row['dispatch']:<8} {'-':>10} {'-':>9} {'-':>8} "
                         f"{'-':>9}  {row['error']}")
            continue
        versus = f"{row['vs_dense']:.2f}" if row["vs_dense"] is not None else "-"
        diff = f"{row['rel_diff']:.1e}" if row["rel_diff"] is not None else "-"
        lines.append(f"{row['name']:<36} {row['group']:<11} {row['dispatch']:<8} {row['median_ms']:>10.1f} "
                     f"{row['min_ms']:>9.1f} {versus:>8} {diff:>9}  {row['note']}")
    return "\n".join(lines)


def markdown(run: Dict[str, Any]) -> str:
    """A saved bench_layer run (its JSON) as one markdown table, a row per point: the dense
    reference's median ms, our torch layer's median ms, then every other case as its time
    over ours (same process: median of per-round ratios; else ratio of medians)."""
    names: List[str] = []
    for point in run["points"]:
        names += [row["name"] for row in point["rows"] if row["name"] not in names + [DENSE, OURS]
                  and row["dispatch"] != "dense"]
    headers = ["tokens", "experts", "dense ms", "ours torch ms", "ours x dense", *(f"{name} / ours" for name in names)]
    rows = []
    for point in run["points"]:
        s, by_name = point["settings"], timed(point["rows"])
        dense, ours = by_name.get(DENSE), by_name.get(OURS)
        cells = [str(s["tokens"]), str(s["num_experts"]), f"{dense['median_ms']:.0f}" if dense else "-",
                 f"{ours['median_ms']:.0f}" if ours else "-", f"{ours['vs_dense']:.2f}" if ours else "-"]
        for name in names:
            row = by_name.get(name)
            cells.append(f"{ratio(row, ours):.2f}" if row and ours else "")
        rows.append(cells)
    return markdown_table(headers, rows, align="r" * len(headers))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Print a saved bench_layer run (its --json file) as a markdown table.")
    parser.add_argument("run", type=Path, help="a bench_layer --json file")
    args = parser.parse_args(argv)
    print(markdown(json.loads(args.run.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
