"""Numeric router options are checked by the routers themselves, not only by the run config:
NaN and +-inf are refused in one line naming the key (no inf capacity, no NaN bias step)."""
import math

import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer

OPTIONS = [("aux_free", "bias_update_speed", 2), ("balanced", "sinkhorn_temperature", 1),
           ("expert_choice", "capacity_factor", 2)]


def layer(router: str, top_k: int, **options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=4, ffn_hidden=4, num_experts=4, top_k=top_k, router=router,
                              router_options=options))


@pytest.mark.parametrize("router,key,top_k", OPTIONS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_option_is_refused_naming_the_key(router, key, top_k, value):
    with pytest.raises(ConfigError, match=rf"^moe\.router_options\.{key}={value!r}: .*finite") as error:
        layer(router, top_k, **{key: value})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("router,key,top_k", OPTIONS)
def test_a_finite_option_is_kept(router, key, top_k):
    assert getattr(layer(router, top_k, **{key: 0.5}).router.options, key) == 0.5
