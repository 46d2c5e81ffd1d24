"""Peak memory per rank, measured: every configuration trains a few steps in fresh processes
(``scripts/bench_memory_rank.py``: one process, or 2 ranks under scripts/run_cpu.sh) and
reports each rank's peak resident set (``ru_maxrss``), with and without the distributed
optimizer (``train.distributed_optimizer``), for the quickstart model and one about 10x
larger, on both frameworks.

The optimizer's part is compared with Megatron-Core's bytes per parameter (float32 training:
param 4 + grad 4 + Adam moments 8 = 16, distributed over d ranks 8 + 8 / d; bf16 with float32
masters: 18 -> 6 + 12 / d): the distributed optimizer saves 8 (1 - 1 / d) bytes per float32
parameter a rank holds. ``optimizer part of RSS`` is measured in each rank: the drop of its
resident set when the AdamW state is released after the steps, per parameter it holds,
against the formula's 8 (plain) or 8 / d (distributed); the drops of the peak and of the
resident set after the steps against the plain run are their own columns (they also hold
what the two gradient exchanges keep). Large blocks are mmapped and returned on free
(``ALLOCATOR``), so the resident set follows the live tensors.
Step times are ratios to the plain optimizer in the same call (2 cores are shared).

    python scripts/bench_memory.py [--backend torch mindspore] [--models quickstart x10]
                                   [--steps 4] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.reporting.provenance import command_line, machine  # noqa: E402
from scripts.reporting.tables import markdown_table  # noqa: E402

CONFIG = ROOT / "configs" / "quickstart.yaml"
MODELS = {  # --set overrides on the quickstart config
    "quickstart": [],
    "x10": ["model.d_model=256", "model.num_layers=8", "model.ffn_hidden=704", "moe.ffn_hidden=352",
            "model.num_heads=8", "model.num_kv_heads=4"],
}
MB = 2 ** 20
# glibc gives every block above 1 MiB its own mmap and returns it on free, so the peak resident
# set follows the live tensors (launch.sh's speed settings keep freed memory instead: the peak
# would then follow the allocation pattern)
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2 ** 20), "MALLOC_MMAP_MAX_": "65536", "MALLOC_TRIM_THRESHOLD_": str(2 ** 20)}


def run_ranks(backend: str, model: str, nproc: int, distributed: bool, steps: int, work: Path) -> List[dict]:
    """Every rank's result of one configuration, run in fresh processes."""
    name = f"{backend}_{model}_{nproc}_{int(distributed)}"
    out, run_dir = work / name / "out", work / name / "run"
    overrides = MODELS[model] + [f"backend={backend}", f"run_dir={run_dir}", "train.eval_every=0",
                                 "train.checkpoint_every=0", f"train.distributed_optimizer={distributed}"]
    args = [str(out), "--config", str(CONFIG), "--steps", str(steps)] + [x for o in overrides for x in ("--set", o)]
    script = ROOT / "scripts" / "bench_memory_rank.py"
    if nproc == 1:
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = ["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", str(nproc), "--framework", backend,
               "--log-dir", str(work / name / "launch"), "--timeout", "1800", "--script", str(script), *args]
    print(f"{name}: running", flush=True)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **ALLOCATOR})
    if result.returncode != 0:
        sys.exit(f"error: {name} failed ({result.returncode}); logs in {work / name}:\n{result.stderr[-2000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def summarise(ranks: List[dict]) -> Dict[str, float]:
    """The worst rank's peak RSS and the ranks' mean step time."""
    return {"peak_rss_mb": max(r["peak_rss_bytes"] for r in ranks) / MB,
            "rss_after_mb": max(r["rss_after_bytes"] for r in ranks) / MB,
            "gpu_peak_mb": max(r["gpu_peak_bytes"] for r in ranks) / MB,
            "params_held": max(r["params_held"] for r in ranks), "params_model": ranks[0]["params_model"],
            "optimizer_mb": max(r["optimizer_bytes"] for r in ranks) / MB,
            "optimizer_resident_mb": max(r["optimizer_resident_bytes"] for r in ranks) / MB,
            "step_s": sum(r["step_s"] for r in ranks) / len(ranks)}


def table(results: Dict[str, Dict[str, float]]) -> str:
    rows = []
    for key, row in results.items():
        backend, model, nproc, distributed = key.split("/")
        plain = results[f"{backend}/{model}/{nproc}/False"]
        sharded = distributed == "True"
        saved = {key: (plain[key] - row[key]) * MB / row["params_held"] for key in ("peak_rss_mb", "rss_after_mb")}
        measured = row["optimizer_resident_mb"] * MB / row["params_held"]
        rows.append([backend, model, nproc, "yes" if sharded else "no", f"{row['params_model'] / 1e6:.1f}M",
                     f"{row['peak_rss_mb']:.0f}", f"{saved['peak_rss_mb']:.2f}" if sharded else "",
                     f"{row['rss_after_mb']:.0f}", f"{saved['rss_after_mb']:.2f}" if sharded else "",
                     f"{row['optimizer_mb']:.1f}", f"{measured:.2f}",
                     f"{8.0 / int(nproc) if sharded else 8.0:.2f}", f"{row['step_s'] / plain['step_s']:.2f}"])
    return markdown_table(["backend", "model", "processes", "distributed optimizer", "parameters",
                           "peak RSS per rank (MB)", "peak saved (bytes/param)", "RSS after the steps (MB)",
                           "after saved (bytes/param)", "AdamW state held (MB)",
                           "optimizer part of RSS (bytes/param)", "Megatron formula", "step time vs plain"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["torch", "mindspore"], choices=("torch", "mindspore"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for backend in args.backend:
            for model in args.models:
                for nproc in (1, 2):
                    for distributed in (False, True) if nproc > 1 else (False,):
                        ranks = run_ranks(backend, model, nproc, distributed, args.steps, Path(tmp))
                        results[f"{backend}/{model}/{nproc}/{distributed}"] = summarise(ranks)
    text = table(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "command": command_line(), "results": results},
                                        indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
