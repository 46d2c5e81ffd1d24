"""LocMoE and LocMoE+, with the gates, dispatch modes and locality options their configs do
not set (test_routers.py runs each config), give the same outputs, aux values and gradients
on MindSpore (PyNative and GRAPH_MODE, per $MOE_MS_MODE) and PyTorch, and the locality loss
reaches the gate's gradient the same way on both. Tolerance as in test_layer.py."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import PARITY_ATOL, PARITY_RTOL, assert_runs_match, numpy_weights, random_inputs
from tests.support.parity_cases import PYNATIVE_ONLY, graph_subset

RTOL, ATOL = PARITY_RTOL, PARITY_ATOL
TOPOLOGY = {"nodes": 2, "devices_per_node": 2}

CASES = [
    dict(router="locmoe", top_k=1, dispatch="dropless", router_options=dict(topology=TOPOLOGY, locality_coef=0.3)),
    dict(router="locmoe", top_k=1, dispatch="capacity", capacity_factor=0.8,
         router_options=dict(topology=TOPOLOGY, locality_coef=0.3, locality_divergence="reverse")),
    dict(router="locmoe", top_k=1, dispatch="capacity", router_options=dict(gate="grap", delta=0.3)),
    dict(router="locmoe", top_k=1, dispatch="capacity", capacity_factor=0.8,
         router_options=dict(gate="learned", topology=TOPOLOGY, locality_coef=0.3)),
    dict(router="locmoe_plus", top_k=2, capacity_factor=0.9,
         router_options=dict(topology=TOPOLOGY, locality_coef=0.3, token_threshold=0.6)),
    dict(router="locmoe_plus", top_k=3, renormalize=False, capacity_factor=1.5, router_options=dict()),
]


IDS = [f"{c['router']}-{i}" for i, c in enumerate(CASES)]
IN_GRAPH = ("locmoe-1", "locmoe_plus-4")  # capacity with the locality loss, LocMoE+ with its threshold


@pytest.mark.parametrize("case", graph_subset(CASES, IDS, IN_GRAPH))
def test_forward_backward_parity(torch_runner, ms_runner, case):
    layer = MoELayer(MoEConfig(d_model=16, ffn_hidden=24, num_experts=4, expert_type="gelu", expert_init_std=0.2,
                               **case))
    values = numpy_weights(layer, seed=3)
    x = random_inputs((4, 6, 16), seed=4)
    cot = random_inputs((4, 6, 16), seed=5)
    a = torch_runner.forward_backward(layer, values, x, cot)
    b = ms_runner.forward_backward(layer, values, x, cot)
    assert np.abs(a["grad_x"]).max() > 0
    assert_runs_match(a, b, RTOL, ATOL)


@PYNATIVE_ONLY
def test_router_gradient_includes_the_locality_loss(torch_runner, ms_runner):
    """With zero cotangent only router losses drive the gate (the paper's gate: its only
    parameter is the per-expert bias eps): raising mu changes its gradient the same way on
    both frameworks."""
    grads = {}
    for mu in (0.0, 1.0):
        layer = MoELayer(MoEConfig(d_model=16, ffn_hidden=8, num_experts=4, top_k=1, router="locmoe",
                                   router_options=dict(topology=TOPOLOGY, locality_coef=mu)))
        values = numpy_weights(layer, seed=6)
        x = random_inputs((4, 6, 16), seed=7)
        zero = np.zeros_like(x)
        a = torch_runner.forward_backward(layer, values, x, zero)["grads"]["router.bias"]
        b = ms_runner.forward_backward(layer, values, x, zero)["grads"]["router.bias"]
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        grads[mu] = a
    assert np.abs(grads[1.0] - grads[0.0]).max() > 1e-3
