"""One training run on the simulated cluster: both nodes' launchers started inside their
namespaces, the link's counters sampled the moment rank 0 logs a train record, and the
measured step time, bytes and validation loss."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from scripts.cluster_sim.accounting import a2a_cross_bytes, kept_share, model_facts, ring_allreduce_cross_bytes
from scripts.cluster_sim.network import NODES, RANKS_PER_NODE, WORLD, Cluster
from scripts.cluster_sim.outcome import Failure, RunResult
from scripts.reporting.provenance import ROOT


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
                     a2a_bytes=a2a_cross_bytes(train, first["step"], facts.d_model, facts.element_bytes,
                                               WORLD) / measured,
                     allreduce_bytes=ring_allreduce_cross_bytes(facts.grad_bytes, WORLD, RANKS_PER_NODE)
                     if backend == "torch" else None,
                     kept_on_node=kept_share(last, facts.dropless, facts.tokens_per_rank, facts.top_k,
                                             facts.moe_layers),
                     val_loss=[r for r in records if r["kind"] == "val"][-1]["val_loss"])


def hierarchical_supported() -> bool:
    """Whether this checkout knows parallel.all_to_all (train.py --print-backend exits 2 if not)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--print-backend", "--config",
           str(ROOT / "configs" / "quickstart.yaml"), "--set", "parallel.all_to_all=hierarchical"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
