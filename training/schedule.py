"""The learning-rate schedule: linear warmup, then cosine decay to a floor."""
from __future__ import annotations

import math


def learning_rate(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``:

        step < W:  lr * (step + 1) / W
        else:      min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,  p = (step - W) / max(1, T - 1 - W)

    so the first step after warmup uses ``lr`` and the last step uses ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
