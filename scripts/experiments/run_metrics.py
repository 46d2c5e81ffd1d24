"""A run's metrics log reduced to the numbers the Results experiments report: routing
summaries over the end of the run, and validation curves against steps and training time.

Training time excludes validation: the trainer's ``elapsed_s`` counts from before the step-0
validation, so the training seconds at an evaluated step s are the train record's
``elapsed_s`` at s minus the time of every validation before s (each validation's time is
its val record's ``elapsed_s`` minus the train record's at the same step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from training.metrics_log import read_records


def load_ratio(tokens_per_expert) -> float:
    """max / mean of the tokens each expert processed, averaged over layers: 1 is perfectly
    balanced, E means one expert took everything. ``tokens_per_expert``: [L, E] or [E]."""
    load = np.atleast_2d(np.asarray(tokens_per_expert, np.float64))
    mean = load.mean(-1)
    return float(np.mean(np.where(mean > 0, load.max(-1) / np.where(mean > 0, mean, 1.0), np.nan)))


def summarise(records: Iterable[Dict[str, Any]], tail: float = 0.5) -> Dict[str, Optional[float]]:
    """One run's numbers from its metrics records: the last validation loss, and over the
    last ``tail`` of the train records the mean dropped fraction, mean max/mean expert load,
    mean tokens processed per expert (mean over layers and experts), mean true experts per
    token, and the median tokens/s. A key the run did not log (a dense model) is None."""
    records = list(records)
    val = [r for r in records if r["kind"] == "val"]
    train_records = [r for r in records if r["kind"] == "train"]
    kept = train_records[int(len(train_records) * (1 - tail)):] or train_records

    def mean_of(key, reduce=float):
        values = [reduce(r[key]) for r in kept if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    rates = [r["tokens_per_s"] for r in kept if r.get("tokens_per_s") is not None]
    return {"val_loss": val[-1]["val_loss"] if val else None,
            "first_val_loss": val[0]["val_loss"] if val else None,
            "dropped_fraction": mean_of("dropped_fraction"),
            "load_max_over_mean": mean_of("tokens_per_expert", load_ratio),
            "tokens_per_expert": mean_of("tokens_per_expert", lambda t: float(np.mean(t))),
            "experts_per_token": mean_of("mean_true_experts_per_token"),
            "tokens_per_s": float(np.median(rates)) if rates else None,
            "elapsed_s": train_records[-1]["elapsed_s"] if train_records else None}


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
    """The curves of the run in ``run_dir`` (its metrics.jsonl)."""
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
