"""Metrics to ``<run_dir>/metrics.jsonl`` (one JSON object per record) and TensorBoard
(tensorboardX, a pure-Python event writer) under ``<run_dir>/tensorboard``; without
tensorboardX installed, one line says so and only the JSONL is written.

A record is ``{"kind": "train" | "val", "step": int, <name>: number or nested list}``.
Scalars go to TensorBoard as ``<kind>/<name>``; arrays (e.g. ``tokens_per_expert``
[L, E]) stay in the JSONL for the plots. On resume, records after the resumed step are
dropped from the JSONL and TensorBoard purges them, so the log reads like one run.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists; NaN/Inf -> None (JSON has no NaN)."""
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value] if value.ndim else to_jsonable(value.item())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def read_records(path: Path) -> Iterator[Dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def tensorboard_writer(folder: Path, resume_step: Optional[int], log: Callable[[str], None]):
    """A tensorboardX SummaryWriter (purging steps after ``resume_step``), or None with one
    ``log`` line when tensorboardX is not installed (it is optional)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        log(f"metrics: tensorboardX is not installed: no TensorBoard events in {folder} "
            f"(metrics.jsonl and the plots are written); pip install tensorboardX for them")
        return None
    return SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)


class MetricsLog:
    """Appends records; ``resume_step`` drops records with a later step first; ``log`` gets
    the line that says TensorBoard events are off when tensorboardX is missing."""

    def __init__(self, run_dir: Path, resume_step: Optional[int] = None, tensorboard: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            self._truncate_after(resume_step)
        self.writer = tensorboard_writer(Path(run_dir) / "tensorboard", resume_step, log) if tensorboard else None
        self.handle = open(self.path, "a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        kept: List[Dict[str, Any]] = [r for r in read_records(self.path) if r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)

    def log(self, kind: str, step: int, values: Dict[str, Any]) -> None:
        record = {"kind": kind, "step": int(step), **{k: to_jsonable(v) for k, v in values.items()}}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
                    self.writer.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()
