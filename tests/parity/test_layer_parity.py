"""Same weights and inputs on MindSpore and PyTorch give the same outputs, losses and
gradients, for every router and both dispatch modes. Tolerance: float32 with different
kernels and summation orders, rtol 1e-4 / atol 1e-5 (values and gradients are O(1))."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs

RTOL, ATOL = 1e-4, 1e-5

CASES = [
    dict(router="topk", top_k=2),
    dict(router="topk", top_k=2, renormalize=False),
    dict(router="switch", top_k=1),
    dict(router="adamoe", top_k=4, num_null_experts=4),
]


@pytest.mark.parametrize("dispatch", ["dropless", "capacity"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("expert_type", ["swiglu", "gelu"])
def test_forward_backward_parity(torch_runner, ms_runner, case, dispatch, expert_type):
    config = MoEConfig(d_model=16, ffn_hidden=24, num_experts=4, dispatch=dispatch, capacity_factor=1.0,
                       expert_type=expert_type, expert_init_std=0.2, **case)
    layer = MoELayer(config)
    values = numpy_weights(layer, seed=3)
    x = random_inputs((3, 10, 16), seed=4)
    cot = random_inputs((3, 10, 16), seed=5)
    a = torch_runner.forward_backward(layer, values, x, cot)
    b = ms_runner.forward_backward(layer, values, x, cot)
    np.testing.assert_allclose(a["y"], b["y"], rtol=RTOL, atol=ATOL)
    assert a["aux"].keys() == b["aux"].keys()
    for key in a["aux"]:
        np.testing.assert_allclose(a["aux"][key], b["aux"][key], rtol=RTOL, atol=ATOL, err_msg=key)
    np.testing.assert_allclose(a["grad_x"], b["grad_x"], rtol=RTOL, atol=ATOL)
    for name in a["grads"]:
        np.testing.assert_allclose(a["grads"][name], b["grads"][name], rtol=RTOL, atol=ATOL, err_msg=name)
