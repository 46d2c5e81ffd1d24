"""LocMoE / LocMoE+ settings: defaults, parameters, capacity state, and one-line errors."""
import math

import pytest

from core.errors import ConfigError
from models.capacity_bound import capacity_bound, large_d_capacity_bound
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers.locality_router import DEFAULT_LOCALITY_COEF


def layer(router="locmoe", top_k=1, d_model=16, num_experts=4, **options):
    return MoELayer(MoEConfig(d_model=d_model, ffn_hidden=8, num_experts=num_experts, top_k=top_k, router=router,
                              dispatch="capacity", capacity_factor=1.25, router_options=options))


def test_gate_parameters_paper_default_and_ablations():
    """Default (the paper's ReLU(GrAP(x) + eps)): only the per-expert bias eps; the dense
    ablation adds W; bare GrAP has none."""
    assert layer().router.options.gate == "grap_relu"
    specs = layer().router.param_specs()
    assert sorted(specs) == ["router.bias"] and specs["router.bias"].shape == (4,) and specs["router.bias"].trainable
    assert layer(gate="grap").router.param_specs() == {}
    assert layer(router="locmoe_plus", top_k=2).router.param_specs() == {}
    specs = layer(gate="learned").router.param_specs()
    assert sorted(specs) == ["router.bias", "router.weight"]
    assert specs["router.weight"].shape == (16, 4) and specs["router.bias"].shape == (4,)


def test_locality_coefficient_defaults_with_and_without_topology():
    assert layer().router.locality_coef == 0.0
    assert layer(topology={"nodes": 2}).router.locality_coef == DEFAULT_LOCALITY_COEF
    assert layer(topology={"nodes": 2}, locality_coef=0.5).router.loss_coefs()["locality"] == 0.5
    assert layer(locality_coef=0.0).router.locality_coef == 0.0


def test_locmoe_capacity_bound_from_the_first_measurement_then_fixed():
    router = layer(topology={"nodes": 2, "devices_per_node": 2}).router
    assert router.capacity_per_device(64) == math.ceil(64 * 1.25 / (4 * 4))
    router.after_step({}, {"affinity_delta": 0.3})
    bound = capacity_bound(0.3, 16, 4)
    assert router.capacity_factor == pytest.approx(bound)
    assert router.capacity_per_device(64) == math.ceil(64 * bound / 16)
    router.after_step({}, {"affinity_delta": 0.9})
    assert router.capacity_factor == pytest.approx(bound)


def test_locmoe_configured_delta_and_factor_policy():
    assert layer(delta=0.2).router.capacity_factor == pytest.approx(capacity_bound(0.2, 16, 4))
    router = layer(capacity_policy="factor").router
    router.after_step({}, {"affinity_delta": 0.3})
    assert router.capacity_factor == 1.25


def test_bound_read_as_tokens_per_expert():
    """bound_unit: tokens: moe.capacity_factor until the first measurement, then ceil(ec_min)
    slots per (device, expert) whatever the batch; the factor reading scales with T."""
    router = layer(bound_unit="tokens", topology={"nodes": 2, "devices_per_node": 2}).router
    assert router.capacity_per_device(64) == math.ceil(64 * 1.25 / (4 * 4))
    router.after_step({}, {"affinity_delta": 0.4})
    bound = capacity_bound(0.4, 16, 4)
    assert 2.0 < bound < 3.0
    assert router.capacity_per_device(64) == router.capacity_per_device(6400) == 3
    factor = layer(delta=0.4, topology={"nodes": 2, "devices_per_node": 2}).router
    assert factor.capacity_per_device(6400) == math.ceil(6400 * bound / 16)
    plus = layer(router="locmoe_plus", top_k=2, d_model=64, num_experts=8, bound_unit="tokens").router
    plus.after_step({}, {"affinity_max": 0.3})
    assert plus.capacity(256) == math.ceil(large_d_capacity_bound(0.3, 64, 8))


def test_locmoe_plus_capacity_re_estimated_every_interval():
    router = layer(router="locmoe_plus", top_k=2, d_model=64, num_experts=8, capacity_interval=2).router
    factors = []
    for delta_max in [0.2, 0.25, 0.3, 0.35, 0.4]:
        router.after_step({}, {"affinity_max": delta_max})
        factors.append(router.capacity_factor)
    expected = [large_d_capacity_bound(d, 64, 8) for d in (0.2, 0.2, 0.3, 0.3, 0.4)]
    assert factors == pytest.approx(expected)
    assert router.capacity(256) == min(256, math.ceil(256 * expected[-1] / 8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_k=2), r"moe\.top_k=2: router 'locmoe' is top-1"),
    (dict(locality_coef=0.1), r"locality_coef=0\.1: the locality loss needs moe\.router_options\.topology"),
    (dict(topology={"nodes": 2}, locality_coef=-1), r"locality_coef=-1: must be a number >= 0"),
    (dict(topology={"nodes": 3}), r"topology\.nodes=3"),
    (dict(gate="noisy"), r"gate='noisy': valid values are grap_relu, learned, grap"),
    (dict(gate="grap", d_model=18), r"d_model=18 divisible by moe\.num_experts=4"),
    (dict(d_model=18), r"gate=grap_relu: the GrAP gate needs moe\.d_model=18 divisible"),
    (dict(topology={"nodes": 2}, locality_divergence="js"), r"locality_divergence='js'"),
    (dict(topology={"nodes": 2}, locality_epsilon=0.0), r"locality_epsilon=0\.0: must be in \(0, 1\)"),
    (dict(capacity_policy="auto"), r"capacity_policy='auto': valid values are bound, factor"),
    (dict(bound_unit="percent"), r"bound_unit='percent': valid values are factor, tokens"),
    (dict(delta=1.5), r"delta=1\.5: must be a cosine in \(0, 1\)"),
    (dict(delta="0.1"), r"delta='0\.1'"),
    (dict(router="locmoe_plus", top_k=2, token_threshold=0.0), r"token_threshold=0\.0: must be in \(0, 1\]"),
    (dict(router="locmoe_plus", top_k=2, capacity_interval=0), r"capacity_interval=0: must be a positive"),
    (dict(router="locmoe_plus", top_k=2, d_model=18), r"d_model=18 divisible"),
    (dict(router="locmoe_plus", top_k=2, bogus=1), r"router_options\.bogus is not an option of router 'locmoe_plus'"),
])
def test_bad_settings_raise_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        layer(**kwargs)
    assert "\n" not in str(error.value)


def test_null_experts_are_refused():
    with pytest.raises(ConfigError, match=r"num_null_experts=2: router 'locmoe' has no null experts"):
        MoELayer(MoEConfig(d_model=16, ffn_hidden=8, num_experts=4, num_null_experts=2, top_k=1, router="locmoe"))
