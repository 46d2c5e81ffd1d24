"""LocMoE Theorem 1 and the LocMoE+ large-d form, checked against a direct integration of
the spherical-cap probability, plus the capacity formula and the host-side capacity state."""
import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import betainc

from core.errors import ConfigError
from models.capacity_bound import (
    MeasuredCapacityFactor,
    cap_probability,
    capacity_bound,
    device_capacity,
    device_capacity_in_tokens,
    large_d_capacity_bound,
)


def integrated_cap_probability(delta: float, d: int) -> float:
    """P(|cos(theta)| >= delta) for theta the angle between a uniform unit vector in R^d and a
    fixed axis: density proportional to sin(theta)^(d-2) on [0, pi]."""
    def density(theta):
        return math.sin(theta) ** (d - 2)

    edge = math.acos(delta)
    options = dict(limit=200, epsabs=0.0, epsrel=1e-10)
    total = quad(density, 0.0, math.pi, points=[math.pi / 2], **options)[0]
    caps = quad(density, 0.0, edge, **options)[0] + quad(density, math.pi - edge, math.pi, **options)[0]
    return caps / total


@pytest.mark.parametrize("d", [3, 8, 64, 512])
@pytest.mark.parametrize("delta", [0.03, 0.2, 0.6])
def test_theorem_1_matches_integration_of_the_cap(d, delta):
    p = integrated_cap_probability(delta, d)
    assert cap_probability(delta, d) == pytest.approx(p, rel=1e-7)
    assert cap_probability(delta, d) == pytest.approx(1.0 - betainc(0.5, (d - 1) / 2, delta ** 2), abs=1e-12)
    assert capacity_bound(delta, d, 16) == pytest.approx(1.0 / (16 * p), rel=1e-7)


def test_monte_carlo_agrees_with_the_cap_probability():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 32))
    cos = x[:, 0] / np.linalg.norm(x, axis=1)
    assert np.mean(np.abs(cos) >= 0.25) == pytest.approx(cap_probability(0.25, 32), abs=3e-3)


@pytest.mark.parametrize("delta", [0.03, 0.1])
def test_large_d_form_is_a_lower_bound_that_the_exponent_approaches(delta):
    dims = [1024, 4096, 16384, 65536]
    exact = [capacity_bound(delta, d, 16) for d in dims]
    large = [large_d_capacity_bound(delta, d, 16) for d in dims]
    assert all(e >= g for e, g in zip(exact, large))
    # relative gap of the exponents log(n * ec): shrinks with d and is small at the largest d
    gaps = [math.log(16 * e) / math.log(16 * g) - 1.0 for e, g in zip(exact, large) if 16 * g > 1.5]
    assert len(gaps) >= 2 and all(b < a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.08


def test_large_d_form_formula():
    assert large_d_capacity_bound(0.2, 100, 4) == pytest.approx(math.exp(0.04 * 100 / 1.96) / 4)


def test_device_capacity_is_the_locmoe_formula_clipped_to_the_device():
    assert device_capacity(1000, 1.25, 4, 8) == math.ceil(1000 * 1.25 / 32)
    assert device_capacity(1000, 0.001, 4, 8) == 1
    assert device_capacity(1000, 50.0, 4, 8) == 250
    assert device_capacity(10, math.inf, 3, 2) == 4


def test_device_capacity_in_tokens_ignores_the_batch_size():
    """ec_min read as tokens per expert (Theorem 1's proof): ceil(ec_min) per device, clipped."""
    assert device_capacity_in_tokens(1000, 1.96, 4) == 2
    assert device_capacity_in_tokens(100_000, 1.96, 4) == 2
    assert device_capacity_in_tokens(1000, 0.3, 4) == 1
    assert device_capacity_in_tokens(10, 50.0, 3) == 4
    assert device_capacity_in_tokens(10, math.inf, 3) == 4


def test_paper_regime_bound_is_about_two():
    """d = 5120, n = 16, delta = 0.03: p_delta = P(|cos| >= 0.03) ~ 2 * P(N(0, 1) >= 0.03 sqrt(d))
    = 2 * P(Z >= 2.147) ~ 0.0318, so ec_min = 1 / (16 * 0.0318) ~ 1.97: two tokens per
    expert in the proof's reading, a capacity factor of ~2 in the library's."""
    assert capacity_bound(0.03, 5120, 16) == pytest.approx(1.97, abs=0.02)


def test_measured_factor_fixed_after_first_batch_when_refresh_is_zero():
    state = MeasuredCapacityFactor(1.25, lambda delta: 10 * delta)
    assert state.factor == 1.25 and not state.measured
    assert state.update(0.1) and state.factor == pytest.approx(1.0) and state.measured
    assert not state.update(0.3) and state.factor == pytest.approx(1.0)


def test_measured_factor_refreshes_every_n_steps():
    state = MeasuredCapacityFactor(1.0, lambda delta: delta, refresh_every=3)
    seen = []
    for step, delta in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]):
        state.update(delta)
        seen.append(state.factor)
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.4, 0.4, 0.4, 0.7])


def test_configured_delta_fixes_the_factor():
    state = MeasuredCapacityFactor(1.0, lambda delta: 2 * delta, delta=0.3)
    assert state.factor == pytest.approx(0.6)
    assert not state.update(0.9) and state.factor == pytest.approx(0.6)


@pytest.mark.parametrize("args, setting", [((0.0, 16, 4), "delta"), ((1.0, 16, 4), "delta"),
                                           ((0.1, 1, 4), "d_model"), ((0.1, 16, 0), "num_experts"),
                                           ((0.1, 16.0, 4), "d_model")])
def test_bad_bound_inputs_name_the_setting(args, setting):
    with pytest.raises(ConfigError, match=setting):
        capacity_bound(*args)


def test_cosines_outside_zero_one_are_not_measurements():
    state = MeasuredCapacityFactor(1.0, lambda delta: delta)
    assert not state.update(-0.2) and not state.update(float("nan")) and state.factor == 1.0
    assert state.update(0.4) and state.factor == pytest.approx(0.4)
