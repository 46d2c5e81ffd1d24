"""Bad settings fail at construction with one ``ConfigError`` whose one-line message names
the setting (and, for a choice, the valid values). No framework is imported."""
import pytest

from core.errors import ConfigError
from models.moe_config import EXPERT_TYPES, MoEConfig
from models.moe_layer import MoELayer
from models.routers import ROUTERS


def build(**settings) -> MoELayer:
    base = dict(d_model=8, ffn_hidden=8, num_experts=4, top_k=2)
    return MoELayer(MoEConfig(**{**base, **settings}))


def config_error(setting: str, **settings) -> str:
    with pytest.raises(ConfigError) as info:
        build(**settings)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message
    assert setting in message, message
    return message


def test_unknown_router_lists_every_registered_router():
    message = config_error("moe.router", router="no_such_router")
    assert "no_such_router" in message
    assert ROUTERS, "no router registered"
    for name in ROUTERS:
        assert name in message, (name, message)


def test_unknown_expert_type_lists_valid_types():
    message = config_error("moe.expert_type", expert_type="relu_squared")
    for name in EXPERT_TYPES:
        assert name in message, (name, message)


def test_clamped_swiglu_needs_a_positive_limit_and_no_shared_expert():
    config_error("moe.swiglu_limit", expert_type="clamped_swiglu", swiglu_limit=0.0)
    config_error("moe.shared_expert_hidden", expert_type="clamped_swiglu", shared_expert_hidden=8)


@pytest.mark.parametrize("router,extra", [("topk", {}), ("adamoe", {"num_null_experts": 3})])
def test_top_k_above_all_slots(router, extra):
    slots = 4 + extra.get("num_null_experts", 0)
    build(router=router, top_k=slots, **extra)  # the largest valid top_k builds
    config_error("moe.top_k", router=router, top_k=slots + 1, **extra)


@pytest.mark.parametrize("factor", [0, 0.0, -0.5])
def test_capacity_factor_not_positive_in_capacity_mode(factor):
    config_error("moe.capacity_factor", dispatch="capacity", capacity_factor=factor)
    build(dispatch="dropless", capacity_factor=factor)  # unused without capacity: accepted


@pytest.mark.parametrize("k", [2, 3])
def test_switch_needs_top_1(k):
    build(router="switch", top_k=1)
    message = config_error("moe.top_k", router="switch", top_k=k)
    assert "switch" in message


def test_adamoe_needs_null_experts():
    build(router="adamoe", num_null_experts=1)
    message = config_error("moe.num_null_experts", router="adamoe", num_null_experts=0)
    assert "adamoe" in message


@pytest.mark.parametrize("router,extra", [("topk", {}), ("switch", {"top_k": 1}), ("adamoe", {"num_null_experts": 2})])
def test_unknown_router_option(router, extra):
    message = config_error("moe.router_options.not_an_option", router=router,
                           router_options={"not_an_option": 1}, **extra)
    assert router in message


@pytest.mark.parametrize("settings,setting", [(dict(shared_expert_hidden=-1), "moe.shared_expert_hidden"),
                                              (dict(shared_expert_hidden=True), "moe.shared_expert_hidden"),
                                              (dict(shared_expert_hidden=8, shared_expert_gate=1), "moe.shared_expert_gate"),
                                              (dict(shared_expert_gate=True), "moe.shared_expert_gate=True needs")])
def test_bad_shared_expert_is_named(settings, setting):
    config_error(setting, **settings)
