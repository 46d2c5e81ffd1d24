"""configs/quickstart.yaml trained for 200 steps on a device in a dtype (bfloat16: float32
master weights), its loss curve compared with the CPU float32 run of the same config kept in
quickstart_reference.json beside this file (curve, tolerance and how it was chosen).

    python3 -m scripts.device_check.quickstart --device cuda --dtype bfloat16 --json result.json
    python3 -m scripts.device_check.quickstart --device cpu --dtype bfloat16 --until 10 --json r.json
    PYTHONPATH=. .venv/bin/python -m scripts.device_check.quickstart --device cpu --dtype float32 --record

``--until N`` stops after step N (a rehearsal): the points up to there are compared, and
only a validation point is required (``--until 1``: the step-0 validation, which checks that
the data and the initial weights are still the reference's, and one finite train step).
``--record`` writes the run as the new reference (keeping the file's tolerance). Exit 0 when
the curve is within tolerance, 1 when not, 2 on bad input (one line).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from core.errors import ConfigError  # noqa: E402
from scripts.device_check.curve import compare, curve_of  # noqa: E402
from scripts.device_check.result import finish  # noqa: E402

REFERENCE = Path(__file__).with_name("quickstart_reference.json")
CONFIG = REPO / "configs" / "quickstart.yaml"
OVERRIDES = ["train.steps=200", "train.eval_every=50", "train.log_every=10", "train.checkpoint_every=0", "seed=0"]


def train(device: str, dtype: str, until: Optional[int], run_dir: Path) -> Dict[str, Any]:
    """Train the quickstart config; its curve, data digest, master-weight dtypes and speed."""
    from training.config import load_config
    from training.metrics_log import read_records
    from training.trainer import Trainer
    config = load_config(CONFIG, OVERRIDES + [f"device={device}", f"dtype={dtype}", f"run_dir={run_dir}"])
    trainer = Trainer(config, progress=False, log=lambda line: print(line, flush=True))
    started = time.perf_counter()
    summary = trainer.run(until=until)
    masters = trainer.train_step.master_weights()
    return {"curve": curve_of(read_records(run_dir / "metrics.jsonl")), "steps": summary["steps"],
            "skipped_steps": summary["skipped_steps"], "tokens_per_s": summary["tokens_per_s"],
            "seconds": round(time.perf_counter() - started, 1), "target": trainer.runtime.target,
            "master_dtypes": sorted({str(v.dtype) for v in masters.values()}),
            "tokens_sha256": hashlib.sha256(trainer.data.tokens.tobytes()).hexdigest()[:16]}


def verdict(run: Dict[str, Any], reference: Dict[str, Any], dtype: str, whole: bool = True) -> Dict[str, Any]:
    """Pass when the data is the reference's, no step was skipped, every loss is finite,
    a low-precision model kept float32 masters and the curve is within tolerance (a
    ``whole`` run: at train and validation points; a rehearsal: at validation points)."""
    tolerance = reference["tolerance"]
    comparison = compare(run["curve"], reference["curve"], tolerance["train_atol"], tolerance["val_atol"],
                         needs=("train", "val") if whole else ("val",))
    losses = list(run["curve"]["train"].values()) + list(run["curve"]["val"].values())
    problems: List[str] = []
    if run["tokens_sha256"] != reference["tokens_sha256"]:
        problems.append(f"data differs from the reference's (tokens sha256 {run['tokens_sha256']} vs "
                        f"{reference['tokens_sha256']}): carry .cache/data from a machine where the dry run passed")
    if run["skipped_steps"] or not all(math.isfinite(v) for v in losses):
        problems.append(f"{run['skipped_steps']} skipped (non-finite) steps")
    if dtype != "float32" and run["master_dtypes"] != ["float32"]:
        problems.append(f"master weights {run['master_dtypes'] or 'absent'}, expected float32")
    if not comparison["ok"]:
        bad = [p for p in comparison["points"] if not p["ok"]]
        where = ", ".join(f"{p['kind']} step {p['step']} {p['diff']:+.3f}" for p in bad[:4]) or "too few points"
        problems.append(f"loss curve outside tolerance (train {tolerance['train_atol']}, val "
                        f"{tolerance['val_atol']}): {where}")
    last = max(comparison["points"], key=lambda p: (p["kind"] == "val", p["step"]), default=None)
    summary = (f"{run['steps']} step{'s' * (run['steps'] != 1)} on {run['target']} {dtype}, {run['seconds']:.0f} s, "
               f"{run['tokens_per_s'] or 0:.0f} tok/s; worst point {comparison['worst']:.2f} of tolerance")
    if last is not None:
        summary += f"; val_loss at step {last['step']} {last['run']:.3f} (reference {last['reference']:.3f})"
    return {"status": "fail" if problems else "pass", "summary": "; ".join(problems) or summary,
            "details": summary, "comparison": comparison}


def record(run: Dict[str, Any], device: str, dtype: str) -> Dict[str, Any]:
    """The reference file's content: this run, the versions, and the existing file's
    tolerance and its basis."""
    kept = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    return {"config": str(CONFIG.relative_to(REPO)), "overrides": OVERRIDES, "device": device, "dtype": dtype,
            "recorded_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "versions": {name: metadata.version(name) for name in ("torch", "numpy", "tokenizers")},
            "tokens_sha256": run["tokens_sha256"], "seconds": run["seconds"], "curve": run["curve"],
            "tolerance": kept.get("tolerance", {"train_atol": 0.1, "val_atol": 0.1}),
            "tolerance_basis": kept.get("tolerance_basis", "")}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cpu or cuda")
    parser.add_argument("--dtype", default="bfloat16", help="float32 or bfloat16")
    parser.add_argument("--until", type=int, help="stop after this step (a rehearsal)")
    parser.add_argument("--json", metavar="PATH", help="write the result here")
    parser.add_argument("--record", action="store_true", help=f"write the run to {REFERENCE.name}")
    args = parser.parse_args(argv)
    if args.until is not None and (args.until < 1 or args.record):
        parser.error("--until must be >= 1, and a recorded reference is the whole run")
    try:
        with tempfile.TemporaryDirectory(prefix="quickstart_") as tmp:
            run = train(args.device, args.dtype, args.until, Path(tmp) / "run")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.record:
        REFERENCE.write_text(json.dumps(record(run, args.device, args.dtype), indent=1) + "\n")
        print(f"recorded {REFERENCE}")
        return 0
    reference = json.loads(REFERENCE.read_text())
    return finish("quickstart", {**verdict(run, reference, args.dtype, whole=args.until is None), "run": run},
                  args.json)


if __name__ == "__main__":
    sys.exit(main())
