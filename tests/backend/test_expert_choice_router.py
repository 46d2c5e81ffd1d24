"""Expert-choice router on the backend under test: each expert takes exactly C tokens, the
ones with its largest softmax scores, and the layer output is the weighted sum over slots."""
import numpy as np
import pytest
from scipy.special import erf, softmax

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs
from tests.support.probes import RouterProbe

D, E = 8, 4


def layer(**options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=D, ffn_hidden=6, num_experts=E, router="expert_choice", expert_type="gelu",
                              expert_init_std=0.3, router_options=options))


def reference_slots(x: np.ndarray, weight: np.ndarray, capacity: int):
    """numpy: probs = softmax(x W) over experts; expert e keeps its top-C tokens."""
    probs = softmax(x.reshape(-1, D).astype(np.float64) @ weight, axis=-1)
    token = np.argsort(-probs.T, axis=-1, kind="stable")[:, :capacity]
    return token, np.take_along_axis(probs.T, token, -1)


@pytest.mark.parametrize("factor,tokens,capacity", [(2.0, 10, 5), (1.0, 10, 3), (0.5, 12, 2)])
def test_every_expert_processes_exactly_c_tokens(runner, factor, tokens, capacity):
    moe = layer(capacity_factor=factor)
    _, aux = runner.forward(moe, numpy_weights(moe), random_inputs((1, tokens, D)))
    np.testing.assert_array_equal(aux["tokens_per_expert"], np.full(E, capacity))
    assert aux["dropped_fraction"] == 0
    assert aux["expert_flops"] == E * capacity * moe.experts.flops_per_row


def test_slots_hold_each_experts_top_c_tokens_by_score(runner):
    moe = layer()
    values = numpy_weights(moe, seed=1)
    x = random_inputs((2, 6, D), seed=2)
    probe = RouterProbe(moe, "slot_weight", ["slot_token", "requested_assignments"])
    slot_weight, aux = runner.forward(probe, values, x)
    token, weight = reference_slots(x, values["router.weight"], 6)
    np.testing.assert_array_equal(aux["slot_token"], token)
    np.testing.assert_allclose(slot_weight, weight, rtol=1e-5, atol=1e-7)
    assert aux["requested_assignments"] == E * 6


def test_output_is_the_weighted_sum_over_slots(runner):
    moe = layer(capacity_factor=0.8)
    values = numpy_weights(moe, seed=3)
    x = random_inputs((1, 10, D), seed=4)
    y, _ = runner.forward(moe, values, x)
    tokens = x.reshape(-1, D).astype(np.float64)
    token, weight = reference_slots(x, values["router.weight"], 2)
    expected = np.zeros_like(tokens)
    for e in range(E):
        up = tokens[token[e]] @ values["experts.w_up"][e]
        out = (0.5 * up * (1 + erf(up / np.sqrt(2)))) @ values["experts.w_down"][e]
        expected[token[e]] += weight[e][:, None] * out
    np.testing.assert_allclose(y.reshape(-1, D), expected, rtol=1e-4, atol=1e-6)
    assert np.abs(y.reshape(-1, D)).sum(-1).min() == 0  # 8 slots, 10 tokens: some token has no expert


def test_router_weight_gets_gradient_through_slot_weights(runner):
    moe = layer()
    x = random_inputs((1, 8, D), seed=5)
    out = runner.forward_backward(moe, numpy_weights(moe), x, random_inputs(x.shape, 6))
    assert np.abs(out["grads"]["router.weight"]).sum() > 0
    assert out["aux"]["loss"] == 0  # no auxiliary loss
