"""Expert choice: capacity C = ceil(T * c / E), option checks, and the non-causal flag."""
import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer


def router(num_experts: int = 4, **options):
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=num_experts, router="expert_choice",
                              router_options=options)).router


@pytest.mark.parametrize("tokens,factor,expected", [(16, 2.0, 8), (10, 2.0, 5), (10, 1.0, 3), (3, 8.0, 3),
                                                    (2, 0.1, 1)])
def test_capacity_is_ceil_t_c_over_e_within_1_and_t(tokens, factor, expected):
    assert router(capacity_factor=factor).capacity(tokens) == expected


def test_default_capacity_factor_is_two():
    assert router().capacity(8) == 4


@pytest.mark.parametrize("factor", [0, -1.0, "2", True])
def test_bad_capacity_factor_is_named(factor):
    with pytest.raises(ConfigError, match="capacity_factor"):
        router(capacity_factor=factor)


def test_expert_choice_refuses_autoregressive_decoding():
    with pytest.raises(ConfigError, match="expert_choice.*not causal.*autoregressive decoding"):
        router().require_causal()


def test_token_choice_routers_are_causal():
    topk = MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4)).router
    assert topk.causal
    topk.require_causal()
