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

--tokens and --experts take comma lists: every (tokens, experts) pair is one point, run as
above (peers only at the first expert count, or at every one with --peers-every-point, and
up to --peers-max-tokens). The workers get glibc malloc and OpenMP settings from
scripts/bench/environment.py (--malloc, --omp-wait-policy). --device cuda and --dtype
bfloat16 move the torch process's cases (dense, ours, HF's block) to the GPU and to bf16.

    PYTHONPATH=. .venv/bin/python scripts/bench_layer.py --json bench_results/layer.json
    PYTHONPATH=. .venv/bin/python scripts/bench_layer.py --tokens 1024,4096,16384,65536 \
        --d-model 256 --ffn-hidden 1024 --plot docs/bench_layer_tokens.png
    PYTHONPATH=. .venv/bin/python scripts/bench_layer.py --quick --peers none
    python3 scripts/bench_layer.py --device cuda --dtype bfloat16 --backends torch --dispatch dropless \
        --peers hf-grouped_mm --peers-every-point --tokens 4096,16384 --experts 8,64
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.bench.common import PEERS, BenchSettings  # noqa: E402
from scripts.bench.environment import MALLOC_MODES, worker_environment  # noqa: E402
from scripts.bench.report import add_comparisons, expert_targets, point_targets, table  # noqa: E402
from scripts.bench.worker import run_group  # noqa: E402
from scripts.reporting.provenance import command_line, machine, package_versions  # noqa: E402

BACKENDS = ("torch", "ms-graph", "ms-pynative")
DISPATCHES = ("dropless", "capacity")
QUICK = dict(d_model=128, ffn_hidden=512, tokens=[1024], warmup=1, repeats=3)
FULL = dict(d_model=512, ffn_hidden=2048, tokens=[4096], warmup=2, repeats=5)
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


def int_list(text: str) -> List[int]:
    try:
        values = [int(item) for item in text.split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers separated by commas") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers >= 1")
    return values


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (d=128, ffn=512, 1024 tokens), 1 warm-up, 3 repeats")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--ffn-hidden", type=int)
    parser.add_argument("--experts", "--num-experts", dest="experts", type=int_list, default=[8],
                        help="expert count, or a comma list to sweep (top-k and ffn fixed: same active FLOPs)")
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--tokens", type=int_list, help="tokens per step, or a comma list to sweep")
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    parser.add_argument("--warmup", type=int, help="untimed steps first (>= 1; the first compiles in graph mode)")
    parser.add_argument("--repeats", type=int, help="timed steps per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", type=choice_list(BACKENDS, allow_none=True), default=list(BACKENDS),
                        help=f"comma list of {', '.join(BACKENDS)} (or none); the dense reference always runs")
    parser.add_argument("--dispatch", type=choice_list(DISPATCHES), default=list(DISPATCHES))
    parser.add_argument("--peers", type=choice_list(PEERS, allow_none=True), default=list(PEERS),
                        help=f"comma list of {', '.join(PEERS)}, or none")
    parser.add_argument("--peers-max-tokens", type=int, default=16384,
                        help="peers run at points with at most this many tokens (and the first expert count)")
    parser.add_argument("--peers-every-point", action="store_true",
                        help="peers at every expert count, not only the first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the torch cases run")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the torch cases' dtype (our router weights stay float32)")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE", "inherit"), default="PASSIVE",
                        help="OMP_WAIT_POLICY for the workers (default PASSIVE: on a shared, oversubscribed "
                             "CPU, spinning OpenMP threads wait for descheduled peers at every op, which "
                             "measured a small layer 3-20x slower and very noisy)")
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="heap",
                        help="glibc malloc in the workers: heap (default: MALLOC_MMAP_MAX_=0 and a huge "
                             "MALLOC_TRIM_THRESHOLD_, so freed blocks are reused and tensors over glibc's "
                             "32 MiB mmap limit stop page-faulting on every step), or default (glibc's own)")
    parser.add_argument("--json", metavar="PATH", help="also write every row, the settings and the machine here")
    parser.add_argument("--plot", metavar="PNG", help="also plot the sweeps (time / dense over tokens, "
                                                      "time / fewest-experts time over experts) here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("d_model", "ffn_hidden", "top_k", "warmup", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    mindspore = [b for b in args.backends if b != "torch"]
    if mindspore and (args.device, args.dtype) != ("cpu", "float32"):
        parser.error(f"--backends {','.join(mindspore)}: the MindSpore cases run on the CPU in float32; "
                     f"with --device {args.device} --dtype {args.dtype} give --backends torch")
    return args


def run_point(settings: BenchSettings, args: argparse.Namespace, peers: List[str]) -> List[Dict[str, Any]]:
    """One spawned process per framework group, one after another (never two timing at once):
    torch (dense reference, ours, peers), then MindSpore graph, then PyNative."""
    ours = args.dispatch if "torch" in args.backends else []
    plan = [("torch", ours, peers)] + [(b, args.dispatch, []) for b in BACKENDS[1:] if b in args.backends]
    rows: List[Dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    for group, dispatches, group_peers in plan:
        print(f"[bench] tokens={settings.tokens} experts={settings.num_experts} {group}: "
              f"{', '.join(list(dispatches) + list(group_peers)) or 'dense reference'}", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                rows += pool.submit(run_group, group, settings, dispatches, group_peers).result()
            except Exception as error:  # a crashed worker (e.g. killed) fails its group only
                rows.append({"name": f"{group} (all)", "group": group, "dispatch": "", "note": "", "y": None,
                             "error": f"worker failed: {type(error).__name__}: {error}", "compare_to": None})
    add_comparisons(rows)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    base = BenchSettings(d_model=args.d_model, ffn_hidden=args.ffn_hidden, num_experts=args.experts[0],
                         top_k=args.top_k, tokens=args.tokens[0], capacity_factor=args.capacity_factor,
                         warmup=args.warmup, repeats=args.repeats, seed=args.seed, device=args.device, dtype=args.dtype)
    points = [dataclasses.replace(base, tokens=t, num_experts=e) for e in args.experts for t in args.tokens]
    for settings in points:
        settings.moe_config("capacity").validate()
    environment = worker_environment(args.malloc, args.omp_wait_policy)  # read by each spawned worker
    load_before = os.getloadavg()[0]
    info = {**machine(), "versions": package_versions(PACKAGES)}
    results = []
    for settings in points:
        with_peers = ((args.peers_every_point or settings.num_experts == args.experts[0])
                      and settings.tokens <= args.peers_max_tokens)
        rows = run_point(settings, args, args.peers if with_peers else [])
        goals = point_targets(rows)
        print(f"\nMoE layer forward+backward, {settings.dtype} on {settings.device}, SwiGLU: d={settings.d_model} "
              f"ffn={settings.ffn_hidden} "
              f"experts={settings.num_experts} top-{settings.top_k} tokens={settings.tokens} "
              f"cf={settings.capacity_factor} (capacity {settings.capacity()}); {settings.warmup} warm-up, "
              f"{settings.repeats} timed steps; load {os.getloadavg()[0]:.1f}")
        print(table(rows))
        print("\n".join(["targets:"] + ["  " + line for line in goals]), flush=True)
        results.append({"settings": settings.as_dict(), "rows": rows, "targets": goals})
    sweep_goals = expert_targets(results)
    if sweep_goals:
        print("\n".join(["", "expert sweep:"] + ["  " + line for line in sweep_goals]))
    info.update(load_average_1m=[load_before, os.getloadavg()[0]], environment=environment,
                command=command_line(argv))
    print(f"\n{info['cores']} CPUs, {' '.join(f'{k}={v}' for k, v in environment.items())}, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}, {info['date_utc']} UTC")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        for point in results:
            point["rows"] = [{k: v for k, v in row.items() if k != "y"} for row in point["rows"]]
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "points": results, "expert_sweep": sweep_goals}, handle, indent=1)
    if args.plot:
        from scripts.bench.plot import plot_sweeps, sweep_title
        plot_sweeps(results, args.plot, sweep_title(base.as_dict(), info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
