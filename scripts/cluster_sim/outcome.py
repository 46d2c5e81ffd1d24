"""What a run on the simulated cluster gives, or how it fails."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class Failure(Exception):
    """A step of the benchmark failed: one line for the user."""


@dataclass(frozen=True)
class RunResult:
    """One training run on the simulated cluster (per-step quantities over the measured steps)."""

    backend: str
    router: str
    all_to_all: str
    mbit: int
    seed: int
    measured_steps: int
    step_s: float
    link_bytes: float
    a2a_bytes: float
    allreduce_bytes: Optional[float]  # gloo's ring model; None on MindSpore (mccl's algorithm unknown)
    kept_on_node: Optional[float]
    val_loss: float
