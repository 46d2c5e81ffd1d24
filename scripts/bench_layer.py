"""Forward+backward time of one MoE layer: ours on torch (eager) and MindSpore (GRAPH_MODE,
PyNative), dropless and capacity dispatch, against a dense SwiGLU FFN with the same active
FLOPs (torch; the reference for every ratio) and against peer MoE libraries configured the
same way (scripts/bench/peer_cases.py; install them with `bash scripts/setup_env.sh bench`).

Each framework runs in its own spawned process (MindSpore never shares one with torch):
torch (the dense reference, ours and the peers), MindSpore GRAPH_MODE, MindSpore PyNative.
In a process every case is warmed up, then the cases take turns, one timed step each, for
--repeats rounds (so drift on a shared machine hits all alike). The table gives the median
and minimum, the ratio to the dense reference (the median of per-round ratios within the
torch process; the ratio of medians across processes), and for implementations that route
the same way as one of ours the largest |y - y_ours| relative to max |y_ours| (first step).

    PYTHONPATH=. .venv/bin/python scripts/bench_layer.py --json bench_results/layer.json
    PYTHONPATH=. .venv/bin/python scripts/bench_layer.py --quick --peers none
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.bench.common import PEERS, BenchSettings  # noqa: E402
from scripts.bench.torch_cases import DENSE  # noqa: E402
from scripts.bench.worker import run_group  # noqa: E402

BACKENDS = ("torch", "ms-graph", "ms-pynative")
DISPATCHES = ("dropless", "capacity")
QUICK = dict(d_model=128, ffn_hidden=512, tokens=1024, warmup=1, repeats=3)
FULL = dict(d_model=512, ffn_hidden=2048, tokens=4096, warmup=2, repeats=5)
PACKAGES = ("torch", "mindspore", "numpy", "transformers", "deepspeed", "st-moe-pytorch", "fairscale")


def choice_list(allowed, allow_none: bool = False):
    def parse(text: str) -> List[str]:
        if allow_none and text == "none":
            return []
        items = [item for item in text.split(",") if item]
        bad = [item for item in items if item not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]!r}: choose from {', '.join(allowed)}")
        return items
    return parse


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (d=128, ffn=512, 1024 tokens), 1 warm-up, 3 repeats")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--ffn-hidden", type=int)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    parser.add_argument("--warmup", type=int, help="untimed steps first (>= 1; the first compiles in graph mode)")
    parser.add_argument("--repeats", type=int, help="timed steps per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", type=choice_list(BACKENDS, allow_none=True), default=list(BACKENDS),
                        help=f"comma list of {', '.join(BACKENDS)} (or none); the dense reference always runs")
    parser.add_argument("--dispatch", type=choice_list(DISPATCHES), default=list(DISPATCHES))
    parser.add_argument("--peers", type=choice_list(PEERS, allow_none=True), default=list(PEERS),
                        help=f"comma list of {', '.join(PEERS)}, or none")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE", "inherit"), default="PASSIVE",
                        help="OMP_WAIT_POLICY for the workers (default PASSIVE: on a shared, oversubscribed "
                             "CPU, spinning OpenMP threads wait for descheduled peers at every op, which "
                             "measured a small layer 3-20x slower and very noisy)")
    parser.add_argument("--malloc", choices=("default", "heap"), default="default",
                        help="glibc malloc in the workers: default, or heap (MALLOC_MMAP_MAX_=0 and a huge "
                             "MALLOC_TRIM_THRESHOLD_: freed blocks are reused instead of unmapped, so tensors "
                             "over glibc's 32 MiB mmap limit stop page-faulting on every step)")
    parser.add_argument("--json", metavar="PATH", help="also write every row, the settings and the machine here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("d_model", "ffn_hidden", "num_experts", "top_k", "tokens", "warmup", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def run_all(settings: BenchSettings, args: argparse.Namespace) -> List[Dict[str, Any]]:
    """One spawned process per framework group, one after another (never two timing at once):
    torch (dense reference, ours, peers), then MindSpore graph, then PyNative."""
    ours = args.dispatch if "torch" in args.backends else []
    plan = [("torch", ours, args.peers)] + [(b, args.dispatch, []) for b in BACKENDS[1:] if b in args.backends]
    rows: List[Dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    for group, dispatches, peers in plan:
        print(f"[bench] {group}: {', '.join(list(dispatches) + list(peers)) or 'dense reference'}",
              file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                rows += pool.submit(run_group, group, settings, dispatches, peers).result()
            except Exception as error:  # a crashed worker (e.g. killed) fails its group only
                rows.append({"name": f"{group} (all)", "group": group, "dispatch": "", "note": "", "y": None,
                             "error": f"worker failed: {type(error).__name__}: {error}", "compare_to": None})
    return rows


def ratio(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    """a's time over b's: the median of per-round ratios when both were timed in the same
    rounds of one process (robust to a shared machine's drift), else the ratio of medians."""
    same_rounds = a.get("process") == b.get("process") and len(a["times_ms"]) == len(b["times_ms"])
    if same_rounds:
        return float(np.median([x / y for x, y in zip(a["times_ms"], b["times_ms"])]))
    return a["median_ms"] / b["median_ms"]


def add_comparisons(rows: List[Dict[str, Any]]) -> None:
    """Ratio to the dense reference; output difference against the named case of ours."""
    by_name = {row["name"]: row for row in rows if "median_ms" in row}
    dense = by_name.get(DENSE)
    for row in rows:
        row["vs_dense"] = ratio(row, dense) if dense and "median_ms" in row else None
        reference = by_name.get(row.get("compare_to") or "", {}).get("y")
        row["rel_diff"] = None
        if reference is not None and row.get("y") is not None and row["y"].shape == reference.shape:
            row["rel_diff"] = float(np.max(np.abs(row["y"] - reference)) / max(np.max(np.abs(reference)), 1e-30))


def targets(rows: List[Dict[str, Any]]) -> List[str]:
    """The three stated targets, each 'met' or 'NOT met' with the numbers."""
    by_name = {row["name"]: row for row in rows if "median_ms" in row}
    lines = []
    ours = by_name.get("ours torch dropless")
    if ours and ours.get("vs_dense") is not None:
        verdict = "met" if ours["vs_dense"] <= 1.10 else "NOT met"
        lines.append(f"torch dropless within 1.10x of dense: {ours['vs_dense']:.3f}x -> {verdict}")
    peers = [(row, ratio(row, ours)) for row in rows if ours and row["group"] == "peers" and "median_ms" in row]
    if peers:
        faster = [row["name"] for row, r in peers if r <= 1.0]
        listed = ", ".join(f"{row['name']} {r:.2f}x" for row, r in peers)
        lines.append(f"torch dropless faster than every peer (peer/ours: {listed}) -> "
                     + ("met" if not faster else "NOT met (" + ", ".join(faster) + ")"))
    for dispatch in DISPATCHES:
        graph, torch_row = by_name.get(f"ours {dispatch} ms-graph"), by_name.get(f"ours torch {dispatch}")
        if graph and torch_row:
            r = ratio(graph, torch_row)
            lines.append(f"ms-graph {dispatch} within 1.3x of torch: {r:.3f}x -> {'met' if r <= 1.3 else 'NOT met'}")
    return lines


def table(rows: List[Dict[str, Any]]) -> str:
    header = f"{'case':<36} {'group':<11} {'dispatch':<8} {'median ms':>10} {'min ms':>9} {'x dense':>8} {'rel |dy|':>9}  note"
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.get("error"):
            lines.append(f"{row['name']:<36} {row['group']:<11} {row['dispatch']:<8} {'-':>10} {'-':>9} {'-':>8} {'-':>9}  "
                         f"{row['error']}")
            continue
        ratio = f"{row['vs_dense']:.2f}" if row["vs_dense"] is not None else "-"
        diff = f"{row['rel_diff']:.1e}" if row["rel_diff"] is not None else "-"
        lines.append(f"{row['name']:<36} {row['group']:<11} {row['dispatch']:<8} {row['median_ms']:>10.1f} "
                     f"{row['min_ms']:>9.1f} {ratio:>8} {diff:>9}  {row['note']}")
    return "\n".join(lines)


def machine() -> Dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "versions": versions}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    settings = BenchSettings(d_model=args.d_model, ffn_hidden=args.ffn_hidden, num_experts=args.num_experts,
                             top_k=args.top_k, tokens=args.tokens, capacity_factor=args.capacity_factor,
                             warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    settings.moe_config("capacity").validate()
    if args.omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # read by each spawned worker's OpenMP
    if args.malloc == "heap":  # read by glibc when each spawned worker starts
        os.environ.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
    load_before = os.getloadavg()[0]
    rows = run_all(settings, args)
    add_comparisons(rows)
    info = machine()
    info["load_average_1m"] = [load_before, os.getloadavg()[0]]
    info["malloc"] = args.malloc
    print(f"MoE layer forward+backward, fp32, SwiGLU: d={settings.d_model} ffn={settings.ffn_hidden} "
          f"experts={settings.num_experts} top-{settings.top_k} tokens={settings.tokens} "
          f"cf={settings.capacity_factor} (capacity {settings.capacity()}); {settings.warmup} warm-up, "
          f"{settings.repeats} timed steps; {info['cpu_count']} CPUs, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, malloc {args.malloc}, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}, "
          f"{info['date']}")
    print(table(rows))
    goals = targets(rows)
    print("\n".join(["", "targets:"] + ["  " + line for line in goals]))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        kept = [{k: v for k, v in row.items() if k != "y"} for row in rows]
        with open(args.json, "w") as handle:
            json.dump({"settings": settings.as_dict(), "machine": info, "rows": kept, "targets": goals}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
