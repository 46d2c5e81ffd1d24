"""Shared parts of the paper-claim experiments (switch_vs_dense.py, adamoe_vs_topk.py): train a
config with one seed through scripts/train.py, read a run's ``metrics.jsonl`` into curves,
find where a curve reaches a target, summarise over seeds, write the JSON / markdown / PNG.

Training time excludes validation: the trainer's ``elapsed_s`` counts from before the step-0
validation, so the training seconds at an evaluated step s are the train record's
``elapsed_s`` at s minus the time of every validation before s (each validation's time is
its val record's ``elapsed_s`` minus the train record's at the same step).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training.metrics_log import read_records  # noqa: E402


@dataclass
class RunCurves:
    """One run: validation loss at the evaluated steps, training seconds (validation excluded)
    at those steps, and the train records (each the mean over its ``log_every`` steps)."""

    val_steps: List[int]
    val_loss: List[float]
    train_seconds: List[float]
    train: List[dict] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.val_loss[-1]

    def train_mean(self, key: str, from_fraction: float = 0.0) -> float:
        """Mean of a train metric over the records after ``from_fraction`` of the run's steps."""
        last = self.train[-1]["step"]
        values = [r[key] for r in self.train if r["step"] > from_fraction * last and r.get(key) is not None]
        if not values:
            raise ValueError(f"no train record has {key!r}")
        return float(np.mean(values))

    def median_tokens_per_s(self) -> float:
        return float(np.median([r["tokens_per_s"] for r in self.train if r.get("tokens_per_s")]))


def curves_from_records(records: Sequence[dict]) -> RunCurves:
    """RunCurves from metrics records; a validation needs a train record at its step (step 0
    excepted), i.e. ``log_every`` must divide ``eval_every``."""
    train = sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])
    train_at = {r["step"]: r for r in train}
    steps, losses, seconds, eval_seconds = [], [], [], 0.0
    for record in sorted((r for r in records if r["kind"] == "val"), key=lambda r: r["step"]):
        step = record["step"]
        if step and step not in train_at:
            raise ValueError(f"validation at step {step} has no train record there: log_every must divide eval_every")
        elapsed = train_at[step]["elapsed_s"] if step else 0.0
        steps.append(step)
        losses.append(float(record["val_loss"]))
        seconds.append(elapsed - eval_seconds)
        eval_seconds += record["elapsed_s"] - elapsed
    if not steps:
        raise ValueError("no validation record")
    return RunCurves(steps, losses, seconds, train)


def read_run(run_dir: Path) -> RunCurves:
    return curves_from_records(list(read_records(Path(run_dir) / "metrics.jsonl")))


def reach(xs: Sequence[float], losses: Sequence[float], target: float) -> Optional[float]:
    """The first x where the piecewise-linear curve (xs, losses) falls to ``target`` or below;
    None when it never does."""
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0:
                return float(xs[0])
            x0, x1, y0 = xs[i - 1], xs[i], losses[i - 1]
            return float(x0 + (x1 - x0) * (y0 - target) / (y0 - loss))
    return None


def seconds_at(curves: RunCurves, step: float) -> float:
    """Training seconds at a (fractional) step, linear between evaluated steps."""
    return float(np.interp(step, curves.val_steps, curves.train_seconds))


def stats(values: Sequence[float]) -> Dict[str, float]:
    """mean, sample std (0 for one value), min, max, n."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def fmt(s: Dict[str, float], digits: int = 3) -> str:
    """'mean ± std' of a ``stats`` dict."""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def train_run(config: Path, run_dir: Path, seed: int, overrides: Sequence[str] = (), backend: str = "torch") -> float:
    """Train ``config`` with ``seed`` into a fresh ``run_dir`` (scripts/train.py in a
    subprocess); returns the wall seconds of the whole call."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config), "--no-progress",
               "--backend", backend, "--set", f"seed={seed}", "--set", f"run_dir={run_dir}"]
    for override in overrides:
        command += ["--set", override]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise SystemExit(f"training failed (exit {done.returncode}): {done.stdout.strip().splitlines()[-1:]}")
    print("  " + done.stdout.strip().splitlines()[-1], flush=True)
    return time.perf_counter() - start


def tokens_per_step(run_dir: Path) -> int:
    """Tokens one optimizer step trains on (batch_size x seq_len), from the run's saved config."""
    from training.config import load_config
    config = load_config(Path(run_dir) / "config.yaml")
    return config.train.batch_size * config.data.seq_len


def run_info(json_path: Path) -> Dict[str, object]:
    """The ``machine`` and ``command`` of an earlier results JSON (what --report-only keeps, so
    that a re-drawn report still names the run's date and load); {} when there is none."""
    if not Path(json_path).is_file():
        return {}
    earlier = json.loads(Path(json_path).read_text(encoding="utf-8"))
    return {key: earlier[key] for key in ("machine", "command") if key in earlier}


def add_seed_arguments(parser, default: int) -> None:
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


def call_history(json_path: Path, seeds: Sequence[int], trained: Sequence[int], this_call: dict) -> List[dict]:
    """The calls behind a results JSON, each {machine, command}: the earlier JSON's (its ``runs``,
    or its one ``machine`` and ``command``) when this call reuses any earlier run, then
    ``this_call`` when it trained anything."""
    earlier: List[dict] = []
    if set(trained) != set(seeds) and Path(json_path).is_file():
        before = json.loads(Path(json_path).read_text(encoding="utf-8"))
        earlier = before.get("runs") or ([run_info(json_path)] if "command" in before else [])
    return earlier + ([this_call] if trained else [])


def write_results(out_dir: Path, name: str, payload: dict, table: str, figure) -> Dict[str, Path]:
    """<out_dir>/<name>.json, <name>_table.md and <name>.png; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json", "table": out_dir / f"{name}_table.md", "plot": out_dir / f"{name}.png"}
    paths["json"].write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    paths["table"].write_text(table, encoding="utf-8")
    figure.savefig(paths["plot"], dpi=110, bbox_inches="tight")
    return paths
