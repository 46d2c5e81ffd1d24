"""Summary statistics of per-seed results."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np


def stats(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean, sample standard deviation (0 for one value), min, max and count of the values
    that are not None (all None and n 0 when there is none)."""
    kept = np.asarray([v for v in values if v is not None], np.float64)
    if not kept.size:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": float(kept.mean()), "sd": float(kept.std(ddof=1)) if kept.size > 1 else 0.0,
            "min": float(kept.min()), "max": float(kept.max()), "n": int(kept.size)}


def paired_difference(runs: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, Any]],
                      key: str = "val_loss") -> Dict[str, Optional[float]]:
    """``stats`` over the seeds both ran of runs[seed][key] - reference[seed][key] ({seed:
    result}; a failed run, one with an "error", is left out): what the seed moves in both
    cancels."""
    ok = {seed: run for seed, run in reference.items() if "error" not in run}
    return stats([run[key] - ok[seed][key] for seed, run in runs.items() if "error" not in run and seed in ok])


def mean_of(runs: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """Key by key mean of runs that report the same numbers ({name: value} each)."""
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
