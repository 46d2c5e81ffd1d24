"""Bad settings and inputs for the skip and balanced routers give one-line ConfigErrors
naming the setting, before any compute."""
import numpy as np
import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer


def layer(router: str, **kwargs) -> MoELayer:
    settings = dict(d_model=4, ffn_hidden=4, num_experts=4, top_k=1, router=router)
    settings.update(kwargs)
    return MoELayer(MoEConfig(**settings))


@pytest.mark.parametrize("router,kwargs,message", [
    ("skip", dict(top_k=2), "moe.top_k=2"),
    ("skip", dict(num_null_experts=2), "moe.num_null_experts=2"),
    ("skip", dict(router_options={"correction": "yes"}), "moe.router_options.correction"),
    ("skip", dict(router_options={"solver": "exact"}), "moe.router_options.solver"),
    ("balanced", dict(top_k=2), "moe.top_k=2"),
    ("balanced", dict(router_options={"solver": "hungarian"}), "moe.router_options.solver"),
    ("balanced", dict(router_options={"exact_max_tokens": -1}), "moe.router_options.exact_max_tokens"),
    ("balanced", dict(router_options={"sinkhorn_temperature": 0}), "moe.router_options.sinkhorn_temperature"),
    ("balanced", dict(router_options={"sinkhorn_iterations": 0}), "moe.router_options.sinkhorn_iterations"),
    ("balanced", dict(router_options={"correction": 1}), "moe.router_options.correction"),
])
def test_bad_settings(router, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as error:
        layer(router, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("router,tokens,noise_shape,message", [
    ("balanced", 10, None, "multiple of moe.num_experts=4"),
    ("balanced", 8, (8, 2), "routing_noise has shape"),
    ("skip", 8, (8, 4), "routing_noise has shape"),
    ("skip", 8, (7, 2), "routing_noise has shape"),
    ("topk", 8, (8, 2), "takes no routing_noise"),
])
def test_bad_batches(router, tokens, noise_shape, message):
    moe = layer(router)
    noise = None if noise_shape is None else np.zeros(noise_shape, np.float32)
    with pytest.raises(ConfigError, match=message):
        moe.check_inputs(np.zeros((tokens, 4), np.float32), routing_noise=noise)


def test_noise_may_follow_the_token_axes():
    layer("skip").check_inputs(np.zeros((2, 4, 4), np.float32), routing_noise=np.zeros((2, 4, 2), np.float32))
