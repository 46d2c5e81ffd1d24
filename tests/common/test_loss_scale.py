"""The loss-scale policy (backends.loss_scale), step by step on a hand-written sequence:
an overflow halves the scale and skips, ``window`` finite steps in a row double it, an
overflow resets the count, at scale 1 a non-finite gradient is a bad step, a non-finite
loss is never an overflow, and a static scale never moves."""
import math

import pytest

from backends.loss_scale import APPLY, OVERFLOW, SKIP, LossScale, loss_scale_for, step_outcome

INF = math.inf


def test_dynamic_scale_follows_overflows_and_finite_runs():
    scale = LossScale(value=8.0, window=3)
    steps = [(1.0, INF, OVERFLOW, 4.0), (1.0, 2.0, APPLY, 4.0), (1.0, 2.0, APPLY, 4.0),
             (1.0, INF, OVERFLOW, 2.0),  # the run of finite steps starts again
             (1.0, 2.0, APPLY, 2.0), (1.0, 2.0, APPLY, 2.0), (1.0, 2.0, APPLY, 4.0),
             (math.nan, 2.0, SKIP, 4.0),  # a bad loss is not an overflow: the scale stays
             (1.0, INF, OVERFLOW, 2.0), (1.0, math.nan, OVERFLOW, 1.0), (1.0, INF, SKIP, 1.0)]
    for loss, norm, outcome, value in steps:
        assert scale.outcome(loss, norm) == outcome, (loss, norm)
        assert scale.value == value


def test_static_scale_and_no_scale():
    static = LossScale(value=128.0, dynamic=False, window=1)
    assert [static.outcome(1.0, n) for n in (1.0, INF, 1.0)] == [APPLY, SKIP, APPLY]
    assert static.value == 128.0
    assert step_outcome(None, 1.0, 1.0) == APPLY and step_outcome(None, 1.0, INF) == SKIP


def test_state_round_trip():
    scale = LossScale(value=64.0, window=5)
    scale.outcome(1.0, 1.0)
    scale.outcome(1.0, 1.0)
    copy = LossScale(window=5)
    copy.load_state_dict(scale.state_dict())
    assert (copy.value, copy.good_steps) == (64.0, 2)


@pytest.mark.parametrize("setting, dtype, expected", [
    ("auto", "float16", (65536.0, True)), ("auto", "bfloat16", None), ("auto", "float32", None),
    ("dynamic", "bfloat16", (65536.0, True)), ("static", "float16", (65536.0, False)), ("none", "float16", None)])
def test_config_setting_chooses_the_scale(setting, dtype, expected):
    scale = loss_scale_for(setting, dtype, 65536.0, 2000)
    assert (None if scale is None else (scale.value, scale.dynamic)) == expected
