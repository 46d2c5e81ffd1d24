"""Simulated two-node cluster on this machine: does LocMoE's locality pay on a slow link?

    sudo .venv/bin/python scripts/sim_cluster.py [--quick] [--routers switch,hash,locmoe,locmoe_plus]
        [--all-to-all flat,hierarchical] [--backends torch,mindspore] [--mbit 50,200,1000]
        [--seeds 0] [--steps 20] [--dispatch config|dropless] [--set KEY=VALUE ...]
        [--json FILE] [--markdown FILE] [--plot FILE]

Root only. Two Linux network namespaces are the two nodes (own UTS namespace and hostname
each, loopback up), joined by one veth pair with addresses 10.200.0.1/24 and 10.200.0.2/24;
``tc qdisc tbf`` limits each direction of the link to ``--mbit`` (no added delay: this kernel
has no netem). Each node runs ``scripts/launch.sh --nnodes 2 --nproc-per-node 2`` inside its
namespace, so 4 ranks train one config with ``parallel.expert_parallel=4`` (2 experts per
rank, 4 per node) and half the experts of every token live on the other node.

Per run (a router's config from configs/, the quickstart model; ``--steps`` steps, validation
at step 0 and at the end on ``train.eval_batches`` batches; ``--dispatch dropless`` replaces
the configs' capacity dispatch, ``--set`` adds overrides to every run):
- step time: (elapsed_s at the last train record - at the first) / the steps between, so
  the first ``log_every`` steps (start-up, warm-up) are left out;
- link bytes per step: the veth's rx + tx byte counters (``/proc/<pid>/net/dev`` of a process
  inside node 0's namespace, the same counters as /sys/class/net/<veth>/statistics), sampled
  the moment rank 0's first and last train records appear in metrics.jsonl (polled every
  few ms), so start-up, rendezvous and validation traffic fall outside; frame headers
  (Ethernet, IP, TCP) and ACKs are counted;
- all-to-all bytes per step from the library's counters (``parallel.traffic.step_bytes``):
  a2a_cross_node_rows (averaged over ranks, summed over MoE layers, dispatch + combine) x
  ranks x d_model x the dtype's bytes x 2 (backward moves as many again), over the same steps;
- gradient all-reduce bytes per step, estimated on torch: gloo's ring all-reduce sends 2 (W-1)/W of
  the replicated gradients' bytes S over every ring edge r -> r+1; the edges whose ends sit
  on different nodes cross the link. The link minus the all-to-all is what that estimate
  must match (with the small count and metric collectives and the headers);
- kept on node: the routers' own_node_share where they report it (locmoe, locmoe_plus),
  else, for dropless dispatch, 1 - cross-node assignments / assignments from the counters;
  capacity dispatch sends whole buffers, so there the counters say nothing about routing;
- validation loss after the steps, averaged over ranks.

Everything the script creates (namespaces, veth, qdiscs, processes inside) is removed on
exit, failure or Ctrl-C; leftovers of a crashed run with the same --prefix are removed
first. Every launch has a timeout. Not part of the tests (root, minutes of CPU). The pieces
live in scripts/cluster_sim/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.cluster_sim.network import Cluster  # noqa: E402
from scripts.cluster_sim.one_run import hierarchical_supported, run_once  # noqa: E402
from scripts.cluster_sim.options import ALL_TO_ALL, BACKENDS, ROUTERS, parse_ints, parse_list  # noqa: E402
from scripts.cluster_sim.outcome import Failure, RunResult  # noqa: E402
from scripts.cluster_sim.report import report  # noqa: E402
from scripts.cluster_sim.sweep import sweep  # noqa: E402


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Method and output columns: see the module docstring.")
    parser.add_argument("--quick", action="store_true",
                        help="switch and locmoe, flat and hierarchical, 200 Mbit/s, torch, 12 steps (~3 min)")
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--all-to-all", default=",".join(ALL_TO_ALL))
    parser.add_argument("--backends", default="torch")
    parser.add_argument("--mbit", default="50,200,1000", help="link rates to sweep (Mbit/s)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--dispatch", choices=("config", "dropless"), default="config",
                        help="config: each router's own (capacity for switch, locmoe, locmoe_plus); dropless: all")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override for every run (repeatable)")
    parser.add_argument("--run-timeout", type=int, default=300, help="seconds per launch (the launcher's --timeout)")
    parser.add_argument("--port", type=int, default=29700, help="first master port (one per run)")
    parser.add_argument("--prefix", default="moesim", help="names of the namespaces and veth ends")
    parser.add_argument("--json", type=Path, help="write the runs and the table here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    parser.add_argument("--plot", type=Path, help="write the step time / bandwidth plot (PNG) here")
    args = parser.parse_args(argv)
    if args.quick:
        args.routers, args.all_to_all, args.backends, args.mbit, args.steps = ("switch,locmoe", "flat,hierarchical",
                                                                              "torch", "200", 12)
    args.routers = parse_list(args.routers, ROUTERS, "--routers")
    args.all_to_all = parse_list(args.all_to_all, ALL_TO_ALL, "--all-to-all")
    args.backends = parse_list(args.backends, BACKENDS, "--backends")
    args.mbit = parse_ints(args.mbit, "--mbit", 1)
    args.seeds = parse_ints(args.seeds, "--seeds", 0)
    if args.dispatch == "dropless":
        args.overrides.append("moe.dispatch=dropless")
    for option, value, minimum in (("--steps", args.steps, 4), ("--eval-batches", args.eval_batches, 1),
                                   ("--run-timeout", args.run_timeout, 30), ("--port", args.port, 1024)):
        if value < minimum:
            raise Failure(f"{option}={value}: must be at least {minimum}")
    if not args.prefix.isalnum() or len(args.prefix) > 12:
        raise Failure(f"--prefix={args.prefix!r}: letters and digits, at most 12")
    return args


def plan(args: argparse.Namespace) -> Iterator[Tuple[str, str, str, int, int]]:
    """(backend, router, all-to-all, Mbit, seed) of every run, slowest link first per backend."""
    for backend in args.backends:
        for mbit in sorted(args.mbit):
            for router in args.routers:
                for a2a in args.all_to_all:
                    for seed in args.seeds:
                        yield backend, router, a2a, mbit, seed


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse_args(argv)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    known = hierarchical_supported()  # without the key, runs pass no parallel.all_to_all (flat)
    if not known and "hierarchical" in args.all_to_all:
        print("note: this checkout has no parallel.all_to_all: measuring the flat all-to-all only", file=sys.stderr)
        args.all_to_all = ["flat"]
    runs = list(plan(args))

    def one(cluster: Cluster, scratch: Path, index: int, run: Tuple[str, str, str, int, int]) -> RunResult:
        backend, router, a2a, mbit, seed = run
        started = time.monotonic()
        result = run_once(cluster, backend, router, a2a if known else None, mbit, seed, args.steps,
                          args.port + index, scratch, args.run_timeout, args.eval_batches, args.overrides)
        print(f"[{index + 1}/{len(runs)}] {backend} {router} {a2a} {mbit} Mbit/s seed {seed}: "
              f"step {result.step_s:.3f} s, link {result.link_bytes / 1e6:.2f} MB/step, "
              f"a2a {result.a2a_bytes / 1e6:.2f} MB/step ({time.monotonic() - started:.0f}s)", flush=True)
        return result

    results, status = sweep(args.prefix, runs, one, "sim_cluster_")
    if results:
        report(results, len(results) < len(runs), args.json, args.markdown, args.plot)
    return status


if __name__ == "__main__":
    sys.exit(main())
