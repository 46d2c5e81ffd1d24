"""The shared expert (``moe.shared_expert_hidden``, ``moe.shared_expert_gate``) on the backend
under test: the layer's output is the same layer's without it plus the shared FFN's output
(sigmoid-gated or not) computed in float64 NumPy; routing, losses and load are unchanged;
``expert_flops`` grows by T times its per-token FLOPs; the gate weight gets the analytic
gradient. Tolerance rtol 1e-5 / atol 1e-6 as in test_layer_reference.py."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs
from tests.support.reference import gelu, silu

RTOL, ATOL = 1e-5, 1e-6
D, SHARED = 8, 10


def config(shared: int, gated: bool, expert_type: str, dispatch: str) -> MoEConfig:
    return MoEConfig(d_model=D, ffn_hidden=12, num_experts=4, top_k=2, expert_type=expert_type, dispatch=dispatch,
                     capacity_factor=0.5, router_init_std=0.6, expert_init_std=0.3,
                     shared_expert_hidden=shared, shared_expert_gate=gated)


def shared_numpy(x: np.ndarray, values: dict, swiglu: bool, gated: bool):
    """(shared(x) [T, d], ffn(x) [T, d], sigmoid(x w_s^T) [T, 1] or None) in float64."""
    w = {name.split("shared_expert")[1]: value.astype(np.float64) for name, value in values.items()
         if "shared_expert" in name}
    x = x.reshape(-1, D).astype(np.float64)
    up = x @ w[".up_proj.weight"].T
    hidden = silu(x @ w[".gate_proj.weight"].T) * up if swiglu else gelu(up)
    ffn = hidden @ w[".down_proj.weight"].T
    if not gated:
        return ffn, ffn, None
    gate = 1.0 / (1.0 + np.exp(-(x @ w["_gate.weight"].T)))
    return gate * ffn, ffn, gate


@pytest.mark.parametrize("gated,expert_type,dispatch", [(True, "swiglu", "dropless"), (False, "swiglu", "capacity"),
                                                        (True, "gelu", "capacity")])
def test_output_is_routed_plus_shared(runner, gated, expert_type, dispatch):
    layer = MoELayer(config(SHARED, gated, expert_type, dispatch))
    values = numpy_weights(layer, seed=5)
    assert any(name.endswith("shared_expert_gate.weight") for name in values) == gated
    plain = MoELayer(config(0, False, expert_type, dispatch))
    x = random_inputs((2, 6, D), seed=6)
    y, aux = runner.forward(layer, values, x)
    y_plain, aux_plain = runner.forward(plain, {name: values[name] for name in plain.param_specs()}, x)
    shared, _, _ = shared_numpy(x, values, expert_type == "swiglu", gated)
    assert np.abs(shared).mean() > 0.1 * np.abs(y_plain).mean(), "the shared expert must matter in this case"
    np.testing.assert_allclose(y, y_plain + shared.reshape(y.shape), rtol=RTOL, atol=ATOL)
    flops = 12 * (2 * (3 if expert_type == "swiglu" else 2) * D * SHARED + (2 * D if gated else 0))  # 12 tokens
    for key, value in aux_plain.items():
        expected = value + flops if key == "expert_flops" else value
        np.testing.assert_allclose(aux[key], expected, rtol=RTOL, atol=ATOL, err_msg=key)


def test_gate_weight_gets_the_analytic_gradient(runner):
    layer = MoELayer(config(SHARED, True, "swiglu", "dropless"))
    values = numpy_weights(layer, seed=7)
    x = random_inputs((1, 5, D), seed=8)
    cotangent = random_inputs((1, 5, D), seed=9)
    result = runner.forward_backward(layer, values, x, cotangent)
    _, ffn, gate = shared_numpy(x, values, True, True)
    upstream = (cotangent.reshape(-1, D) * ffn).sum(-1, keepdims=True)  # dL/dgate
    expected = (upstream * gate * (1.0 - gate) * x.reshape(-1, D)).sum(0, keepdims=True)
    name = next(name for name in values if name.endswith("shared_expert_gate.weight"))
    np.testing.assert_allclose(result["grads"][name], expected, rtol=1e-4, atol=1e-6)
    assert all(np.abs(g).sum() > 0 for n, g in result["grads"].items() if "shared_expert." in n)
