"""The whole MoE layer on the backend under test equals the NumPy reference
(tests/support/reference.py) for every router, both dispatch modes and both drop policies:
output, every loss, and the metrics (tokens_per_expert, dropped_fraction,
mean_true_experts_per_token, expert_flops, which the reference counts assignment by
assignment). Tolerance rtol 1e-5 / atol 1e-6: float32 kernels vs float64, O(1) values."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support import reference as ref
from tests.support.harness import numpy_weights, random_inputs

RTOL, ATOL = 1e-5, 1e-6

ROUTERS = {
    "topk-k2": dict(router="topk", top_k=2),
    "topk-k2-raw": dict(router="topk", top_k=2, renormalize=False),
    "topk-k3": dict(router="topk", top_k=3),
    "switch": dict(router="switch", top_k=1),
    "adamoe-m4-k4": dict(router="adamoe", num_null_experts=4, top_k=4),
    "adamoe-m6-k2": dict(router="adamoe", num_null_experts=6, top_k=2),
}
DISPATCH = {
    "dropless": dict(dispatch="dropless"),
    "capacity-position": dict(dispatch="capacity", drop_policy="position"),
    "capacity-probability": dict(dispatch="capacity", drop_policy="probability"),
}


def make_config(router: str, dispatch: str, expert_type: str) -> MoEConfig:
    return MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, expert_type=expert_type, capacity_factor=0.5,
                     router_init_std=0.6, expert_init_std=0.3, balance_loss_coef=0.1, z_loss_coef=0.01,
                     **ROUTERS[router], **DISPATCH[dispatch])


def assert_aux_equal(aux: dict, expected: dict) -> None:
    assert set(aux) == set(expected), (sorted(aux), sorted(expected))
    for key, value in expected.items():
        np.testing.assert_allclose(aux[key], value, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("expert_type", ["swiglu", "gelu"])
@pytest.mark.parametrize("dispatch", DISPATCH)
@pytest.mark.parametrize("router", ROUTERS)
def test_layer_matches_reference(runner, router, dispatch, expert_type):
    config = make_config(router, dispatch, expert_type)
    layer = MoELayer(config)
    values = numpy_weights(layer, seed=21)
    x = random_inputs((2, 12, 8), seed=22)
    y, aux = runner.forward(layer, values, x)
    y_ref, aux_ref = ref.moe_layer(x, values, config)
    if config.dispatch == "capacity":
        assert aux_ref["dropped_fraction"] > 0, "the case must drop assignments"
    assert y.shape == x.shape
    np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)
    assert_aux_equal(aux, aux_ref)


@pytest.mark.parametrize("router", ["topk-k2", "adamoe-m4-k4"])
def test_drop_policies_keep_different_assignments(router):
    """Guards the test above: on its inputs the two policies really differ."""
    masks = []
    for dispatch in ("capacity-position", "capacity-probability"):
        config = make_config(router, dispatch, "swiglu")
        values = numpy_weights(MoELayer(config), seed=21)
        masks.append(ref.layer_plan(random_inputs((2, 12, 8), seed=22), values, config)["kept"])
    assert not np.array_equal(masks[0], masks[1])
