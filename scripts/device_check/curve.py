"""A training run's loss curve against a reference curve (framework-free).

A curve is ``{"train": {step: mean lm_loss of the steps logged there}, "val": {step:
val_loss}}`` with string keys (as JSON writes them). Two runs of one config agree when, at
every logged step both have, the train loss is within ``train_atol`` and the validation loss
within ``val_atol`` of the reference.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence

Curve = Dict[str, Dict[str, float]]


def curve_of(records: Iterable[Dict[str, Any]]) -> Curve:
    """The curve of a run's ``metrics.jsonl`` records (``training.metrics_log``)."""
    curve: Curve = {"train": {}, "val": {}}
    for record in records:
        if record["kind"] == "train" and record.get("lm_loss") is not None:
            curve["train"][str(record["step"])] = float(record["lm_loss"])
        elif record["kind"] == "val" and record.get("val_loss") is not None:
            curve["val"][str(record["step"])] = float(record["val_loss"])
    return curve


def compare(run: Curve, reference: Curve, train_atol: float, val_atol: float,
            needs: Sequence[str] = ("train", "val")) -> Dict[str, Any]:
    """Per logged step both curves have: the difference and whether it is within its
    tolerance; ``ok`` when every one is and at least one point of each kind in ``needs``
    was compared; ``worst`` the largest difference over its tolerance (1.0 at the limit)."""
    points: List[Dict[str, Any]] = []
    for kind, atol in (("train", train_atol), ("val", val_atol)):
        for step in sorted(set(run[kind]) & set(reference[kind]), key=int):
            diff = run[kind][step] - reference[kind][step]
            points.append({"kind": kind, "step": int(step), "run": run[kind][step], "reference": reference[kind][step],
                           "diff": diff, "ok": abs(diff) <= atol, "of_tolerance": abs(diff) / atol})
    kinds = {p["kind"] for p in points}
    return {"ok": set(needs) <= kinds and all(p["ok"] for p in points), "points": points,
            "worst": max((p["of_tolerance"] for p in points), default=0.0),
            "compared": {kind: sum(p["kind"] == kind for p in points) for kind in ("train", "val")}}
