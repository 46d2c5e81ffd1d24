"""Gradients of the backend under test equal central finite differences of its own
forward, for every router, dispatch mode, drop policy and expert type, on a tiny layer
(d=4, f=6, 3 experts, 6 tokens) with drops in capacity mode.

Loss: L = sum(y * cotangent) + aux["loss"], with large aux coefficients so that the
balance and z-loss gradients are visible. For each parameter and the input, along a random
direction v: (L(p + eps v) - L(p - eps v)) / (2 eps) must equal <dL/dp, v>, after checking
that the routing (expert indices, and which assignments capacity keeps) is the same at
p - eps v, p and p + eps v (the seed is the first whose routing has a clear margin: sorted
top-(k+1) probabilities, and for the probability policy the weights, >= 0.02 apart).
eps = 3e-3; float32 forward passes make the difference
quotient accurate to ~2e-4 (measured; rounding ~1e-7 / eps, truncation ~eps^2), so the
tolerance is |fd - analytic| <= 1e-3 * (1 + |analytic|)."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.probes import RouterProbe
from tests.support import reference as ref
from tests.support.harness import numpy_weights, random_inputs

EPS = 3e-3
TOL = 1e-3
MARGIN = 0.02

ROUTERS = {"topk": dict(router="topk", top_k=2), "switch": dict(router="switch", top_k=1),
           "adamoe": dict(router="adamoe", num_null_experts=3, top_k=3)}
DISPATCH = {"dropless": dict(dispatch="dropless"),
            "capacity-position": dict(dispatch="capacity", drop_policy="position"),
            "capacity-probability": dict(dispatch="capacity", drop_policy="probability")}


def margin(plan: dict, config: MoEConfig) -> float:
    k = config.top_k
    probs = -np.sort(-plan["probs"], -1)[:, :k + 1]
    gaps = [np.min(probs[:, :-1] - probs[:, 1:])]
    if config.dispatch == "capacity" and config.drop_policy == "probability":
        weights = np.unique(plan["weight"][plan["index"] < config.num_experts])
        gaps.append(np.min(np.diff(weights)) if len(weights) > 1 else np.inf)
    return float(min(gaps))


def clear_case(layer: MoELayer, config: MoEConfig):
    """The first seed whose routing has a clear margin (and drops, in capacity mode)."""
    for seed in range(100):
        values = numpy_weights(layer, seed=seed)
        x = random_inputs((6, 4), seed=1000 + seed)
        plan = ref.layer_plan(x, values, config)
        true = plan["index"] < config.num_experts
        drops = 0 < plan["kept"].sum() < true.sum()
        if margin(plan, config) >= MARGIN and (drops or config.dispatch == "dropless"):
            return values, x, plan
    raise AssertionError("no seed gives a routing with a clear margin")


@pytest.mark.parametrize("expert_type", ["swiglu", "gelu"])
@pytest.mark.parametrize("dispatch", DISPATCH)
@pytest.mark.parametrize("router", ROUTERS)
def test_gradients_match_finite_differences(runner, router, dispatch, expert_type):
    config = MoEConfig(d_model=4, ffn_hidden=6, num_experts=3, expert_type=expert_type, capacity_factor=0.5,
                       expert_init_std=0.5, router_init_std=0.8, balance_loss_coef=1.0, z_loss_coef=0.1,
                       **ROUTERS[router], **DISPATCH[dispatch])
    layer = MoELayer(config)
    probe = RouterProbe(layer, keys=("expert_index",))
    values, x, base = clear_case(layer, config)
    cot = random_inputs((6, 4), seed=53).astype(np.float64)
    analytic = runner.forward_backward(layer, values, x, cot.astype(np.float32))

    def loss(vals, inputs):
        y, aux = runner.forward(layer, vals, inputs)
        plan = ref.layer_plan(inputs, vals, config)
        routed = runner.forward(probe, vals, inputs)[1]["expert_index"]
        assert np.array_equal(routed, base["index"]) and np.array_equal(plan["kept"], base["kept"]), \
            "the perturbation changed the routing"
        return float(np.sum(y.astype(np.float64) * cot) + aux["loss"])

    rng = np.random.default_rng(54)
    for name in sorted(analytic["grads"]) + ["x"]:
        point = x if name == "x" else values[name]
        direction = rng.standard_normal(point.shape)
        gradient = analytic["grad_x"] if name == "x" else analytic["grads"][name]
        expected = float(np.sum(gradient.astype(np.float64) * direction))
        sides = []
        for sign in (1.0, -1.0):
            moved = (point + sign * EPS * direction).astype(np.float32)
            sides.append(loss(values, moved) if name == "x" else loss({**values, name: moved}, x))
        fd = (sides[0] - sides[1]) / (2 * EPS)
        assert abs(fd - expected) <= TOL * (1 + abs(expected)), (name, fd, expected)
