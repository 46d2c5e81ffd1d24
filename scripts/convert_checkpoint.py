"""Move a run's newest checkpoint to the other backend.

    .venv/bin/python scripts/convert_checkpoint.py RUN_DIR NEW_RUN_DIR --backend mindspore [--check]

NEW_RUN_DIR gets the config (backend changed), the checkpoint and the metrics so far;
continue it with ``.venv/bin/python scripts/train.py --resume NEW_RUN_DIR``. ``--check`` computes
the validation loss from the checkpoint on both backends and fails (exit 1) when they
differ by more than ``--tolerance`` (relative; default 1e-4).
Exit codes: 0 done, 1 check failed, 2 bad arguments (one line on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from core.errors import ConfigError  # noqa: E402
from training.convert import convert_run, run_config  # noqa: E402


def validation_loss(run_dir: Path) -> float:
    from training.trainer import Trainer
    trainer = Trainer(run_config(run_dir), resume=True, log=lambda line: None, progress=False)
    return trainer.validate()["val_loss"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="run directory with a checkpoint")
    parser.add_argument("target", type=Path, help="new run directory")
    parser.add_argument("--backend", required=True, choices=("torch", "mindspore"), help="backend of the new run")
    parser.add_argument("--check", action="store_true", help="compare validation losses on both backends")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative difference --check accepts (default 1e-4)")
    args = parser.parse_args(argv)
    try:
        path = convert_run(args.source, args.target, args.backend)
        print(f"converted: {path} (continue with: {sys.executable} scripts/train.py --resume {args.target})")
        if not args.check:
            return 0
        before, after = validation_loss(args.source), validation_loss(args.target)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    difference = abs(after - before) / abs(before)
    print(f"validation loss: {before:.6f} ({run_config(args.source).backend}) vs {after:.6f} ({args.backend}); "
          f"relative difference {difference:.2e}")
    return 0 if difference <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
