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
- all-to-all bytes per step from the library's counters: a2a_cross_node_rows (averaged over
  ranks, summed over MoE layers, dispatch + combine) x ranks x d_model x 4 bytes x 2
  (backward moves as many again), over the same steps;
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
first. Every launch has a timeout. Not part of the tests (root, minutes of CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUTERS = ("switch", "hash", "locmoe", "locmoe_plus")
ALL_TO_ALL = ("flat", "hierarchical")
BACKENDS = ("torch", "mindspore")
NODES, RANKS_PER_NODE = 2, 2
WORLD = NODES * RANKS_PER_NODE
SUBNET = "10.200.0"
ELEMENT_BYTES = 4  # float32 activations and gradients


class Failure(Exception):
    """A step of the benchmark failed: one line for the user."""


@dataclass(frozen=True)
class RunResult:
    """One training run on the simulated cluster (per-step quantities over the measured steps)."""

    backend: str
    router: str
    all_to_all: str
    mbit: int
    seed: int
    measured_steps: int
    step_s: float
    link_bytes: float
    a2a_bytes: float
    allreduce_bytes: Optional[float]  # gloo's ring model; None on MindSpore (mccl's algorithm unknown)
    kept_on_node: Optional[float]
    val_loss: float


# ---------------------------------------------------------------- pure helpers (unit-tested)

def ring_cross_edges(world: int, ranks_per_node: int) -> int:
    """Edges r -> r+1 (mod world) of the all-reduce ring whose ends are on different nodes."""
    return sum((r // ranks_per_node) != (((r + 1) % world) // ranks_per_node) for r in range(world))


def ring_allreduce_cross_bytes(grad_bytes: float, world: int, ranks_per_node: int) -> float:
    """Bytes a ring all-reduce of ``grad_bytes`` per rank sends across nodes (both directions):
    every edge carries reduce-scatter + all-gather = 2 (W-1)/W of the buffer."""
    return 2 * (world - 1) / world * grad_bytes * ring_cross_edges(world, ranks_per_node)


def a2a_cross_bytes(records: Sequence[dict], first_step: int, d_model: int, world: int) -> float:
    """All-to-all bytes across nodes, forward + backward, summed over ranks, for the steps
    after ``first_step``: every train record holds the mean over its interval of the per-rank
    (rank-averaged) a2a_cross_node_rows."""
    total, previous = 0.0, first_step
    for record in records:
        if record["step"] > first_step:
            total += record.get("a2a_cross_node_rows", 0.0) * (record["step"] - previous)
            previous = record["step"]
    return total * world * d_model * ELEMENT_BYTES * 2


def kept_share(record: dict, dropless: bool, tokens_per_rank: int, top_k: int, moe_layers: int) -> Optional[float]:
    """Share of assignments that stay on their token's node: the router's own_node_share, or
    from the counters for dropless dispatch (a cross-node assignment is a dispatch + combine
    pair of rows); None when neither says."""
    if record.get("own_node_share") is not None:
        return float(record["own_node_share"])
    if not dropless:
        return None
    assignments = tokens_per_rank * top_k * moe_layers
    return 1.0 - record.get("a2a_cross_node_rows", 0.0) / 2 / assignments


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


def aggregate(results: Sequence[RunResult]) -> List[dict]:
    """One row per (backend, router, all-to-all, Mbit): means over seeds (and the spread of
    step time and validation loss when there are several seeds)."""
    groups: Dict[tuple, List[RunResult]] = {}
    for r in results:
        groups.setdefault((r.backend, r.router, r.all_to_all, r.mbit), []).append(r)
    rows = []
    for (backend, router, a2a, mbit), runs in groups.items():
        shares = [r.kept_on_node for r in runs if r.kept_on_node is not None]
        rows.append({"backend": backend, "router": router, "all_to_all": a2a, "mbit": mbit, "seeds": len(runs),
                     "step_s": statistics.mean(r.step_s for r in runs),
                     "step_s_sd": statistics.stdev(r.step_s for r in runs) if len(runs) > 1 else 0.0,
                     "link_mb": statistics.mean(r.link_bytes for r in runs) / 1e6,
                     "a2a_mb": statistics.mean(r.a2a_bytes for r in runs) / 1e6,
                     "allreduce_mb": None if runs[0].allreduce_bytes is None
                     else statistics.mean(r.allreduce_bytes for r in runs) / 1e6,
                     "kept_on_node": statistics.mean(shares) if shares else None,
                     "val_loss": statistics.mean(r.val_loss for r in runs),
                     "val_loss_sd": statistics.stdev(r.val_loss for r in runs) if len(runs) > 1 else 0.0})
    return rows


COLUMNS = ("backend", "router", "all-to-all", "Mbit/s", "seeds", "step s", "link MB/step", "a2a MB/step",
           "link - a2a", "all-reduce est.", "kept on node", "val loss")


def table_cells(row: dict) -> List[str]:
    """A row of ``aggregate`` as the table's strings."""
    spread = row["seeds"] > 1
    return [row["backend"], row["router"], row["all_to_all"], str(row["mbit"]), str(row["seeds"]),
            f"{row['step_s']:.3f}" + (f" ± {row['step_s_sd']:.3f}" if spread else ""),
            f"{row['link_mb']:.2f}", f"{row['a2a_mb']:.2f}", f"{row['link_mb'] - row['a2a_mb']:.2f}",
            "n/a" if row["allreduce_mb"] is None else f"{row['allreduce_mb']:.2f}",
            "n/a" if row["kept_on_node"] is None else f"{row['kept_on_node']:.3f}",
            f"{row['val_loss']:.3f}" + (f" ± {row['val_loss_sd']:.3f}" if spread else "")]


def text_table(rows: Sequence[dict]) -> str:
    """Aligned plain-text table."""
    cells = [list(COLUMNS)] + [table_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in cells)


def markdown_table(rows: Sequence[dict]) -> str:
    """GitHub markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * (len(COLUMNS) - 3)]
    return "\n".join(lines + ["| " + " | ".join(table_cells(row)) + " |" for row in rows])


# ---------------------------------------------------------------- the simulated cluster

def sh(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run a short system command (ip, tc) with a timeout; a failure is one line."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result


class Cluster:
    """Namespaces ``<prefix>0`` and ``<prefix>1`` joined by veth ``<prefix>0v`` <-> ``<prefix>1v``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.holder: Optional[subprocess.Popen] = None

    def ns(self, node: int) -> str:
        return f"{self.prefix}{node}"

    def veth(self, node: int) -> str:
        return f"{self.prefix}{node}v"

    def addr(self, node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    def remove(self) -> None:
        """Delete everything of this prefix (idempotent): processes inside the namespaces
        (by pid), the namespaces (which takes the veth and its qdiscs along), a stray veth."""
        existing = sh("ip", "netns", "list", check=False).stdout.split()
        for node in range(NODES):
            if self.ns(node) not in existing:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = [int(p) for p in sh("ip", "netns", "pids", self.ns(node), check=False).stdout.split()]
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if pids and sig == signal.SIGTERM:
                    time.sleep(1.0)
            sh("ip", "netns", "del", self.ns(node), check=False)
        sh("ip", "link", "del", self.veth(0), check=False)  # a pair left in the root namespace
        if self.holder is not None:
            self.holder.wait(10)
            self.holder = None

    def build(self) -> None:
        """Fresh namespaces, veth pair with addresses, loopback up; a holder process in node 0
        whose /proc/<pid>/net/dev shows the namespace's counters."""
        self.remove()
        for node in range(NODES):
            sh("ip", "netns", "add", self.ns(node))
        sh("ip", "link", "add", self.veth(0), "type", "veth", "peer", "name", self.veth(1))
        for node in range(NODES):
            sh("ip", "link", "set", self.veth(node), "netns", self.ns(node))
            sh("ip", "-n", self.ns(node), "addr", "add", f"{self.addr(node)}/24", "dev", self.veth(node))
            sh("ip", "-n", self.ns(node), "link", "set", "lo", "up")
            sh("ip", "-n", self.ns(node), "link", "set", self.veth(node), "up")
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.ns(0), "sleep", "86400"])

    def set_rate(self, mbit: int) -> None:
        """tbf on both veth ends: each direction limited to ``mbit``; burst 1 ms of traffic
        (at least 64 KiB, one GSO packet), queue up to 100 ms."""
        burst = max(64 * 1024, mbit * 1_000_000 // 8 // 1000)
        for node in range(NODES):
            sh("tc", "-n", self.ns(node), "qdisc", "replace", "dev", self.veth(node), "root", "tbf",
               "rate", f"{mbit}mbit", "burst", str(burst), "latency", "100ms")

    def link_bytes(self) -> int:
        """rx + tx bytes of node 0's veth end (= everything that crossed the link)."""
        assert self.holder is not None
        for line in Path(f"/proc/{self.holder.pid}/net/dev").read_text().splitlines():
            name, _, counters = line.partition(":")
            if name.strip() == self.veth(0):
                fields = counters.split()
                return int(fields[0]) + int(fields[8])
        raise Failure(f"{self.veth(0)} is missing from node 0's namespace")

    def launch(self, node: int, framework: str, port: int, log_dir: Path, timeout: int,
               train_args: Sequence[str], log: Path) -> subprocess.Popen:
        """Node ``node``'s launcher inside its namespace, with its own hostname (MindSpore
        groups ranks into nodes by host) and gloo bound to its veth."""
        launcher = ["bash", str(ROOT / "scripts" / "launch.sh"), "--nnodes", str(NODES), "--nproc-per-node",
                    str(RANKS_PER_NODE), "--node-rank", str(node), "--master-addr", self.addr(0),
                    "--master-port", str(port), "--log-dir", str(log_dir / f"node{node}"),
                    "--timeout", str(timeout), "--framework", framework, *train_args]
        cmd = ["ip", "netns", "exec", self.ns(node), "unshare", "--uts", "sh", "-c",
               f'hostname {self.ns(node)} && exec "$@"', "sh", *launcher]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": self.veth(node)}
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)


# ---------------------------------------------------------------- one run

@dataclass(frozen=True)
class Model:
    """What the byte accounting needs from a router's config."""

    d_model: int
    top_k: int
    dropless: bool
    moe_layers: int
    tokens_per_rank: int
    grad_bytes: int  # replicated (non-expert) trainable parameters, float32


def model_facts(config_path: Path, overrides: Sequence[str]) -> Model:
    """Read the config and count the replicated parameters (framework-free)."""
    import numpy as np
    from models.transformer import Transformer
    from training.config import load_config
    from training.trainer import transformer_config
    config = load_config(config_path, list(overrides))
    vocab = config.model.vocab_size or config.data.vocab_size
    model = Transformer(transformer_config(config, vocab))
    replicated = sum(int(np.prod(s.shape)) for s in model.param_specs().values() if s.trainable and not s.expert_sharded)
    return Model(config.model.d_model, config.moe.top_k, config.moe.dispatch == "dropless", len(model.moe_layers),
                 config.train.batch_size // WORLD * config.data.seq_len, replicated * ELEMENT_BYTES)


def new_records(path: Path, offset: int) -> Tuple[List[dict], int]:
    """Complete JSON lines appended to ``path`` since ``offset`` -> (records, new offset)."""
    if not path.is_file():
        return [], offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


def train_args(router: str, backend: str, a2a: Optional[str], seed: int, steps: int, run_dir: Path,
               log_every: int, eval_batches: int, extra: Sequence[str]) -> List[str]:
    """scripts/train.py arguments of one run: the router's config at 4-way expert parallelism,
    then ``extra`` overrides."""
    sets = [f"backend={backend}", f"run_dir={run_dir}", f"seed={seed}", f"train.steps={steps}",
            f"train.eval_every={steps}", f"train.eval_batches={eval_batches}", f"train.log_every={log_every}",
            "train.checkpoint_every=0", f"train.warmup_steps={min(5, steps)}",
            f"parallel.expert_parallel={WORLD}", "parallel.timeout_s=120"]
    if a2a is not None:
        sets.append(f"parallel.all_to_all={a2a}")
    sets += extra
    return ["--config", str(ROOT / "configs" / f"{router}.yaml"), "--no-progress"] + [x for s in sets for x in ("--set", s)]


def run_once(cluster: Cluster, backend: str, router: str, a2a: Optional[str], mbit: int, seed: int,
             steps: int, port: int, scratch: Path, timeout: int, eval_batches: int,
             extra: Sequence[str]) -> RunResult:
    """Train one config on both nodes; sample the link counters at rank 0's train records."""
    log_every = max(1, steps // 4)
    name = f"{backend}_{router}_{a2a or 'flat'}_{mbit}_{seed}"
    run_dir = scratch / name
    run_dir.mkdir(parents=True)
    cluster.set_rate(mbit)
    args = train_args(router, backend, a2a, seed, steps, run_dir / "run", log_every, eval_batches, extra)
    jobs = [cluster.launch(node, backend, port, run_dir, timeout, args, run_dir / f"node{node}.out")
            for node in range(NODES)]
    metrics, offset, samples, records = run_dir / "run" / "metrics.jsonl", 0, {}, []
    deadline = time.monotonic() + timeout + 30
    try:
        while any(job.poll() is None for job in jobs):
            if time.monotonic() > deadline:
                raise Failure(f"{name}: no end after {timeout + 30}s; logs in {run_dir}")
            fresh, offset = new_records(metrics, offset)
            for record in fresh:
                if record["kind"] == "train":
                    samples[record["step"]] = cluster.link_bytes()
            records += fresh
            time.sleep(0.005)
    finally:
        for job in jobs:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait(10)
    fresh, offset = new_records(metrics, offset)
    records += fresh
    failed = [node for node, job in enumerate(jobs) if job.returncode != 0]
    if failed:
        tail = (run_dir / f"node{failed[0]}.out").read_text(errors="replace").strip().splitlines()[-3:]
        raise Failure(f"{name}: node {failed[0]} exited {jobs[failed[0]].returncode}: {' | '.join(tail)} "
                      f"(logs in {run_dir})")
    train = [r for r in records if r["kind"] == "train"]
    first, last = train[0], train[-1]
    measured = last["step"] - first["step"]
    if measured < 1 or first["step"] not in samples or last["step"] not in samples:
        raise Failure(f"{name}: too few train records to measure (raise --steps)")
    facts = model_facts(ROOT / "configs" / f"{router}.yaml", extra)
    return RunResult(backend, router, a2a or "flat", mbit, seed, measured,
                     step_s=(last["elapsed_s"] - first["elapsed_s"]) / measured,
                     link_bytes=(samples[last["step"]] - samples[first["step"]]) / measured,
                     a2a_bytes=a2a_cross_bytes(train, first["step"], facts.d_model, WORLD) / measured,
                     allreduce_bytes=ring_allreduce_cross_bytes(facts.grad_bytes, WORLD, RANKS_PER_NODE)
                     if backend == "torch" else None,
                     kept_on_node=kept_share(last, facts.dropless, facts.tokens_per_rank, facts.top_k,
                                             facts.moe_layers),
                     val_loss=[r for r in records if r["kind"] == "val"][-1]["val_loss"])


# ---------------------------------------------------------------- the sweep

def hierarchical_supported() -> bool:
    """Whether this checkout knows parallel.all_to_all (train.py --print-backend exits 2 if not)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--print-backend", "--config",
           str(ROOT / "configs" / "quickstart.yaml"), "--set", "parallel.all_to_all=hierarchical"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120).returncode == 0


def plan(args: argparse.Namespace) -> Iterator[Tuple[str, str, str, int, int]]:
    """(backend, router, all-to-all, Mbit, seed) of every run, slowest link first per backend."""
    for backend in args.backends:
        for mbit in sorted(args.mbit):
            for router in args.routers:
                for a2a in args.all_to_all:
                    for seed in args.seeds:
                        yield backend, router, a2a, mbit, seed


def plot(rows: Sequence[dict], path: Path) -> None:
    """Step time against link bandwidth, one line per router (solid flat, dashed hierarchical)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backends = sorted({row["backend"] for row in rows})
    fig, axes = plt.subplots(1, len(backends), figsize=(6 * len(backends), 4.5), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for index, router in enumerate(ROUTERS):
            for a2a, style in (("flat", "-"), ("hierarchical", "--")):
                line = sorted((r["mbit"], r["step_s"]) for r in rows
                              if (r["backend"], r["router"], r["all_to_all"]) == (backend, router, a2a))
                if line:
                    ax.plot(*zip(*line), style, marker="o", color=f"C{index}", label=f"{router} ({a2a})")
        ax.set(xscale="log", xlabel="inter-node link (Mbit/s, tbf)", ylabel="step time (s)",
               title=f"{backend}: 2 nodes x 2 ranks, EP=4")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse_args(argv)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: network namespaces need root: run as root (sudo)", file=sys.stderr)
        return 2
    known = hierarchical_supported()  # without the key, runs pass no parallel.all_to_all (flat)
    if not known and "hierarchical" in args.all_to_all:
        print("note: this checkout has no parallel.all_to_all: measuring the flat all-to-all only", file=sys.stderr)
        args.all_to_all = ["flat"]
    runs = list(plan(args))
    cluster = Cluster(args.prefix)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    results: List[RunResult] = []
    scratch = Path(tempfile.mkdtemp(prefix="sim_cluster_"))  # kept when a run fails: its logs
    status = 0
    try:
        cluster.build()
        for index, (backend, router, a2a, mbit, seed) in enumerate(runs):
            started = time.monotonic()
            result = run_once(cluster, backend, router, a2a if known else None, mbit, seed, args.steps,
                              args.port + index, scratch, args.run_timeout, args.eval_batches, args.overrides)
            results.append(result)
            print(f"[{index + 1}/{len(runs)}] {backend} {router} {a2a} {mbit} Mbit/s seed {seed}: "
                  f"step {result.step_s:.3f} s, link {result.link_bytes / 1e6:.2f} MB/step, "
                  f"a2a {result.a2a_bytes / 1e6:.2f} MB/step ({time.monotonic() - started:.0f}s)", flush=True)
        shutil.rmtree(scratch)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: cleaning up", file=sys.stderr)
        status = 130
    finally:
        cluster.remove()
    if results:
        report(results, args, partial=len(results) < len(runs))
    return status


def report(results: Sequence[RunResult], args: argparse.Namespace, partial: bool) -> None:
    """The table on stdout and the requested files (the runs so far when the sweep stopped)."""
    rows = aggregate(results)
    if partial:
        print(f"partial: {len(results)} run(s) finished before the sweep stopped")
    print(text_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in results], "table": rows}, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(rows) + "\n")
    if args.plot:
        plot(rows, args.plot)

if __name__ == "__main__":
    sys.exit(main())
