"""Warmup then cosine decay (training/schedule.py)."""
import math

import pytest

from training.schedule import learning_rate

LR, MIN_LR, WARMUP, STEPS = 1e-3, 1e-4, 10, 110


def lrs():
    return [learning_rate(s, LR, MIN_LR, WARMUP, STEPS) for s in range(STEPS)]


def test_warmup_is_linear_up_to_the_peak():
    values = lrs()[:WARMUP]
    assert values == pytest.approx([LR * (s + 1) / WARMUP for s in range(WARMUP)])


def test_cosine_decays_from_peak_to_floor():
    values = lrs()[WARMUP:]
    assert values[0] == pytest.approx(LR)
    assert values[-1] == pytest.approx(MIN_LR)
    assert all(a >= b for a, b in zip(values, values[1:]))
    middle = len(values) // 2  # half way through the decay the cosine is at its midpoint
    progress = middle / (len(values) - 1)
    assert values[middle] == pytest.approx(MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_no_warmup_starts_at_peak_and_past_the_end_stays_at_floor():
    assert learning_rate(0, LR, MIN_LR, 0, STEPS) == pytest.approx(LR)
    assert learning_rate(STEPS + 5, LR, MIN_LR, WARMUP, STEPS) == pytest.approx(MIN_LR)
