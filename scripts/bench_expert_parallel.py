"""Expert parallelism on this machine: step time of EP=2 and of data parallelism alone (two
processes, scripts/run_cpu.sh) against one process, and the bytes the MoE all-to-alls send per step against the exact
minimum (assignments whose expert lives on another rank x d x element size).

    python scripts/bench_expert_parallel.py [--backend torch|mindspore ...] [--steps 30]
                                            [--config configs/quickstart.yaml] [--json FILE]
                                            [--set section.key=value ...]

Each run trains ``--steps`` steps of the config (no evaluation, no checkpoints) and reads
its metrics log: step time = global tokens per step / the median tokens/s of the logged
intervals (the first interval, with compilation and warm-up, is dropped); all-to-all bytes
per step over all processes from the last record's row counters (``parallel.traffic.step_bytes``). Both runs use
the same two cores (torchrun and msrun give each process one thread). The ``mode`` column is
how rank 0 ran the step, from the run's first log line: ``eager`` (torch), ``GRAPH_MODE`` or
``PyNative`` (MindSpore; ``uncompiled``: forward and backward ran op by op).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parallel.traffic import ELEMENT_BYTES, step_bytes  # noqa: E402
from training.config import load_config  # noqa: E402
from training.metrics_log import read_records  # noqa: E402


def execution_mode(log: str, backend: str) -> str:
    """How the run's step ran, from its first log line (``backends.runtime.Runtime.execution``)."""
    if backend == "torch":
        return "eager"
    found = re.search(r"mindspore on \w+, (GRAPH_MODE|PyNative)(, forward and backward uncompiled)?", log)
    return "?" if found is None else found.group(1) + (" uncompiled" if found.group(2) else "")


def run(backend: str, config: Path, steps: int, nproc: int, ep: int, run_dir: Path, extra=()) -> dict:
    overrides = [*extra, f"backend={backend}", f"run_dir={run_dir}", f"train.steps={steps}", "train.eval_every=0",
                 "train.checkpoint_every=0", "train.log_every=5", f"train.warmup_steps={min(5, steps)}",
                 f"parallel.expert_parallel={ep}"]
    args = ["--config", str(config), "--no-progress"] + [x for o in overrides for x in ("--set", o)]
    if nproc == 1:
        cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *args]
    else:
        cmd = ["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", str(nproc), "--log-dir", str(run_dir / "launch"),
               "--timeout", "1800", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:4])} ... failed ({result.returncode}):\n{result.stderr[-2000:]}")
    records = [r for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    settings = load_config(config, [f"backend={backend}"])
    tokens = settings.train.batch_size * settings.data.seq_len
    rates = [r["tokens_per_s"] for r in records[1:] if r.get("tokens_per_s")] or [records[-1]["tokens_per_s"]]
    last = records[-1]
    log = result.stdout if nproc == 1 else (run_dir / "logs" / "rank0.log").read_text(errors="replace")

    def bytes_per_step(rows: float) -> float:
        return step_bytes(rows, settings.model.d_model, ELEMENT_BYTES[settings.dtype], nproc)

    return {"backend": backend, "mode": execution_mode(log, backend), "processes": nproc, "expert_parallel": ep, "step_ms": 1000.0 * tokens / statistics.median(rates),
            "tokens_per_s": statistics.median(rates),
            "a2a_bytes_per_step": bytes_per_step(last.get("a2a_sent_rows", 0.0)),
            "a2a_min_bytes_per_step": bytes_per_step(last.get("a2a_needed_rows", 0.0)),
            "final_loss": last["loss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=("torch", "mindspore"),
                        help="framework(s) to measure (default: torch)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. moe.dispatch=capacity")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for backend in args.backend or ["torch"]:
            for nproc, ep in ((1, 1), (2, 2), (2, 1)):
                results.append(run(backend, args.config, args.steps, nproc, ep, Path(scratch) / f"{backend}{nproc}{ep}",
                                   args.set))
    print(f"{'backend':10} {'mode':20} {'procs':>5} {'EP':>3} {'step ms':>9} {'tokens/s':>9} {'a2a MB/step':>12} {'minimum MB':>11} "
          f"{'vs 1 proc':>9}")
    for r in results:
        single = next(x for x in results if x["backend"] == r["backend"] and x["processes"] == 1)
        print(f"{r['backend']:10} {r['mode']:20} {r['processes']:5d} {r['expert_parallel']:3d} {r['step_ms']:9.1f} {r['tokens_per_s']:9.0f} "
              f"{r['a2a_bytes_per_step'] / 1e6:12.3f} {r['a2a_min_bytes_per_step'] / 1e6:11.3f} "
              f"{r['step_ms'] / single['step_ms']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
