"""Each router on the backend under test equals the NumPy reference: expert indices
exactly, and logits, probabilities, combine weights and unweighted losses to float32
accuracy (rtol 1e-5, atol 1e-6: O(1) values, single-precision kernels vs float64)."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.probes import RouterProbe
from tests.support import reference as ref
from tests.support.harness import numpy_weights, random_inputs

RTOL, ATOL = 1e-5, 1e-6

CASES = {
    "topk-k2": dict(router="topk", top_k=2),
    "topk-k3-raw": dict(router="topk", top_k=3, renormalize=False),
    "switch": dict(router="switch", top_k=1),
    "adamoe-m4-k4": dict(router="adamoe", num_null_experts=4, top_k=4),
    "adamoe-m6-k2": dict(router="adamoe", num_null_experts=6, top_k=2),
}


@pytest.mark.parametrize("case", CASES)
def test_router_matches_reference(runner, case):
    config = MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, router_init_std=0.6, **CASES[case]).validate()
    probe = RouterProbe(MoELayer(config), keys=("expert_index", "logits", "probs"))
    values = numpy_weights(probe, seed=11)
    x = random_inputs((48, 8), seed=12)
    weight, aux = runner.forward(probe, values, x)
    expected = ref.route(x, values, config)
    np.testing.assert_array_equal(aux["expert_index"], expected["index"])
    np.testing.assert_allclose(aux["logits"], expected["logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(aux["probs"], expected["probs"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(weight, expected["weight"], rtol=RTOL, atol=ATOL)
    assert aux["balance_loss"] == pytest.approx(expected["balance"], rel=RTOL, abs=ATOL)
    assert aux["z_loss"] == pytest.approx(expected["z"], rel=RTOL, abs=ATOL)
    if config.router == "adamoe":
        true = expected["index"] < config.num_experts
        assert true.any() and (~true).any(), "the draw must select true and null experts"
        if case == "adamoe-m6-k2":
            assert (~true.any(-1)).any(), "the draw must have a token routed only to nulls"
        assert np.all(weight[~true] == 0)



@pytest.mark.parametrize("gate_bias", [True, False])
def test_gpt_oss_gate_bias_by_hand(runner, gate_bias):
    """gpt-oss routes by top-k of x W + b, then a softmax over the k chosen logits. Logits
    (1.0, 0.5, 0.0, -1.0) with b = (0, 1, 0, 0): (1.0, 1.5, 0.0, -1.0), so experts 1 then 0,
    weights softmax(1.5, 1.0) = (e^0.5, 1) / (e^0.5 + 1) = (0.6224593, 0.3775407); without
    the bias experts 0 then 1 with the same weights. The bias gets a gradient."""
    config = MoEConfig(d_model=4, ffn_hidden=8, num_experts=4, top_k=2, router="topk", renormalize=True,
                       router_options=dict(gate_bias=gate_bias))
    probe = RouterProbe(MoELayer(config), keys=("expert_index",))
    values = numpy_weights(probe)
    values["router.weight"] = np.zeros((4, 4), np.float32)
    values["router.weight"][0] = [1.0, 0.5, 0.0, -1.0]
    if gate_bias:
        values["router.bias"] = np.array([0.0, 1.0, 0.0, 0.0], np.float32)
    x = np.eye(4, dtype=np.float32)[:1]
    out = runner.forward_backward(probe, values, x, np.array([[1.0, -1.0]], np.float32))
    np.testing.assert_array_equal(out["aux"]["expert_index"], [[1, 0]] if gate_bias else [[0, 1]])
    np.testing.assert_allclose(out["y"], [[0.6224593, 0.3775407]], rtol=1e-6)
    assert ("router.bias" in out["grads"]) == gate_bias
    if gate_bias:
        assert np.abs(out["grads"]["router.bias"]).max() > 0
