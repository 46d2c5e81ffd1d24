"""Move a run to the other backend: its config (backend and run_dir changed), its newest
checkpoint and its metrics up to that step go into a new run directory, which
``scripts/train.py --resume`` continues on the new backend.

Checkpoints of both backends use the same names and numpy layouts (training/checkpoint.py),
so only the metadata changes; every rank's framework random generator states are dropped
(the two frameworks' generators are not interchangeable; numpy's and Python's are kept).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from core.errors import ConfigError
from training.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import RunConfig, load_config, save_config
from training.distributed import FRAMEWORK_RNG
from training.metrics_log import read_records


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The resolved config saved in a run directory, with ``overrides`` (``section.key=value``)
    applied and ``run_dir`` set to where it now is."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml there (not a run directory)")
    return load_config(path, [*overrides, f"run_dir={run_dir}"])


def convert_run(source: Path, target: Path, backend: str) -> Path:
    """Write ``target`` (a new run directory) from ``source``'s newest checkpoint; returns
    the converted checkpoint's path."""
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ConfigError(f"{target}: the converted run needs its own directory")
    if latest_checkpoint(checkpoint_dir(target)) is not None:
        raise ConfigError(f"{target}: already holds checkpoints; choose an empty directory")
    config = replace(run_config(source), backend=backend, run_dir=str(target))
    latest = latest_checkpoint(checkpoint_dir(source))
    if latest is None:
        raise ConfigError(f"{source}: no checkpoint in {checkpoint_dir(source)}")
    checkpoint = load_checkpoint(latest)
    for name in [n for n in checkpoint.rng if n.rpartition("/")[2] in FRAMEWORK_RNG]:
        del checkpoint.rng[name]
    checkpoint = replace(checkpoint, backend=backend)
    save_config(config, target / "config.yaml")
    path = save_checkpoint(checkpoint_dir(target), checkpoint, config.train.keep_checkpoints)
    records = [r for r in read_records(source / "metrics.jsonl") if r["step"] <= checkpoint.step]
    with open(target / "metrics.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return path
