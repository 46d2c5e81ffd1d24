"""One rank of a ``scripts/bench_memory.py`` configuration, in a fresh process (one process, or
one rank under scripts/run_cpu.sh): builds the trainer of ``--config`` with ``--set``
overrides, trains ``--steps`` steps, and writes OUT_DIR/rank<r>.json with this process's peak
resident set (``ru_maxrss``; tracemalloc does not see framework tensors; on a GPU also
torch's ``max_memory_allocated``), its resident set after the steps (gradients freed: weights,
optimizer state, the framework), the resident set the AdamW state occupies (the drop when
it is released at the end), the parameters it holds, the AdamW state it holds (exact
element counts) and the median step time after the first step.

    python scripts/bench_memory_rank.py OUT_DIR --config FILE [--set section.key=value ...] [--steps 4]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch.process_groups import close_process_groups  # noqa: E402
from training.config import load_config  # noqa: E402


def optimizer_bytes(train_step) -> int:
    """Bytes of the AdamW moments and float32 masters this rank holds."""
    sharded = train_step.sharded
    if sharded is not None:
        copies = 2 + (sharded.master is not None)
        return 4 * copies * sum(b.shard for _, b, _ in sharded.buckets)
    hooks = train_step.hooks
    params = hooks.parameters()
    count = sum(int(p.numel()) if hasattr(p, "numel") and callable(p.numel) else int(p.size) for p in params)
    return 4 * count * (2 + (hooks.master is not None))


def resident_bytes() -> int:
    """This process's resident set now (``/proc/self/statm``), after a garbage collection."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def optimizer_resident_bytes(train_step) -> int:
    """The resident set the AdamW state (moments, float32 masters) occupies: the drop when it
    is released at the end of the run (large blocks are returned to the system on free)."""
    before = resident_bytes()
    if train_step.sharded is not None:
        train_step.sharded.exp_avg = train_step.sharded.exp_avg_sq = train_step.sharded.master = None
    else:
        train_step.hooks.optimizer = train_step.hooks.master = None
        train_step.hooks.recompile()  # MindSpore's compiled update holds the optimizer
    return before - resident_bytes()


def gpu_peak_bytes(backend: str) -> int:
    """torch's peak allocated bytes on this process's GPU; 0 on the CPU and on MindSpore."""
    if backend != "torch":
        return 0
    import torch
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    from training.trainer import Trainer
    trainer = Trainer(config, progress=False, tensorboard=False, log=lambda line: None)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        trainer._one_step()  # the trainer's step without its logs, evaluation and plots
        times.append(time.perf_counter() - started)
    held = trainer.module.numpy_params()
    result = {"rank": trainer.dist.rank, "world": trainer.dist.world,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "rss_after_bytes": resident_bytes(),
              "gpu_peak_bytes": gpu_peak_bytes(config.backend),
              "params_held": int(sum(v.size for v in held.values())),
              "params_model": int(trainer.num_params),
              "optimizer_bytes": optimizer_bytes(trainer.train_step),
              "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0]}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"rank{trainer.dist.rank}.json").write_text(json.dumps(result), encoding="utf-8")
    result["optimizer_resident_bytes"] = optimizer_resident_bytes(trainer.train_step)
    (args.out_dir / f"rank{trainer.dist.rank}.json").write_text(json.dumps(result), encoding="utf-8")
    close_process_groups(trainer.dist.run)
    if trainer.run_lock is not None:
        trainer.run_lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
