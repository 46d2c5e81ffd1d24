"""Language-model runs of the Results experiments: a config trained by scripts/train.py in
a subprocess with ``--set`` overrides, its metrics log read back, and the options that pick
which seeds a call trains."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from scripts.reporting.provenance import ROOT


def read_spec(path: Path) -> Dict[str, Any]:
    """An experiment's YAML spec (configs/experiments/*.yaml) as a mapping."""
    from training.yaml_io import read_yaml
    spec = read_yaml(Path(path))
    if not isinstance(spec, dict):
        raise SystemExit(f"{path}: expected a mapping")
    return spec


def as_overrides(settings: Optional[Mapping[str, Any]]) -> List[str]:
    """{'train.steps': 100, 'moe.router_options.seed': 0} -> ['train.steps=100', ...]
    (lists and mappings written as JSON, which YAML reads back)."""
    return [f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
            for key, value in (settings or {}).items()]


def step_overrides(steps: Optional[int]) -> List[str]:
    """A shorter run (a dry run): ``steps`` steps, warmup a fifth of them, evaluation and
    logging every quarter; [] for None (the config's own)."""
    if steps is None:
        return []
    every = max(1, steps // 4)
    return [f"train.steps={steps}", f"train.warmup_steps={steps // 5}", f"train.eval_every={every}",
            f"train.log_every={every}"]


def train(config: Path, overrides: Sequence[str], run_dir: Path, backend: str) -> List[Dict[str, Any]]:
    """Train ``config`` with ``overrides`` into ``run_dir`` (replaced) on ``backend`` (one line
    on stdout as it starts); the metrics.jsonl records. A failed run raises RuntimeError with
    the tail of its output."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config), "--backend", backend,
               "--no-progress", "--set", f"run_dir={run_dir}", *[arg for o in overrides for arg in ("--set", o)]]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        tail = "\n".join(done.stdout.strip().splitlines()[-8:])
        raise RuntimeError(f"{Path(config).name} on {backend} exited {done.returncode}:\n{tail}")
    with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def tokens_per_step(run_dir: Path) -> int:
    """Tokens one optimizer step trains on (batch_size x seq_len), from the run's saved config."""
    from training.config import load_config
    config = load_config(Path(run_dir) / "config.yaml")
    return config.train.batch_size * config.data.seq_len


def add_seed_arguments(parser: argparse.ArgumentParser, default: int) -> None:
    """--seeds N (report seeds 0..N-1) and --train-seeds (train only these of them; the others'
    runs are read from their run directories, as an earlier call left them)."""
    parser.add_argument("--seeds", type=int, default=default, help=f"seeds 0..N-1 (default {default})")
    parser.add_argument("--train-seeds", type=int, nargs="+", metavar="SEED",
                        help="train only these of the seeds and read the others' earlier runs (default: all)")


def seeds_to_train(seeds: Sequence[int], train_seeds: Optional[Sequence[int]], report_only: bool) -> List[int]:
    """The seeds this call trains: none with --report-only, else --train-seeds (each one of
    ``seeds``) or all of ``seeds``."""
    if report_only:
        return []
    if train_seeds is None:
        return list(seeds)
    outside = sorted(set(train_seeds) - set(seeds))
    if outside:
        raise SystemExit(f"--train-seeds {outside} not among the reported seeds {list(seeds)} (raise --seeds)")
    return sorted(set(train_seeds))


def add_spec_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options of an experiment that trains what its spec lists, once per seed, and keeps
    every result in docs/results/<name>.json: --seeds, --set, --out (run directories),
    --name (results file stem) and --report-only."""
    parser.add_argument("--seeds", type=int, nargs="+", help="the seeds to run (default: the spec's)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="one more override for every run (a dry run: --set train.steps=2 --set train.warmup_steps=1)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "experiments" / name, help="run directories")
    parser.add_argument("--name", default=name, help="results file stem under docs/results (dry runs: another)")
    parser.add_argument("--report-only", action="store_true", help="redraw the table and plot from the JSON, train nothing")
