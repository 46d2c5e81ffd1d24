"""Aux-loss-free router on the backend under test: the bias steers selection only, and
repeated after_step updates balance a skewed load."""
import numpy as np
import pytest
from scipy.special import expit, softmax

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs
from tests.support.probes import RouterProbe

D, E = 8, 4


def layer(top_k: int = 2, renormalize: bool = True, **options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=D, ffn_hidden=8, num_experts=E, top_k=top_k, router="aux_free",
                              expert_type="gelu", renormalize=renormalize, router_options=options))


def skewed_inputs(values: dict, tokens: int) -> np.ndarray:
    """Tokens pushed along expert 0's gate column: expert 0 scores highest for most of them."""
    column = values["router.weight"][:, 0]
    return random_inputs((1, tokens, D), seed=1) + 2.0 * column / np.linalg.norm(column)


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
def test_bias_updates_drive_a_skewed_load_to_uniform(runner, score):
    moe = layer(top_k=1, score=score, bias_update_speed=0.01)
    values = numpy_weights(moe)
    x = skewed_inputs(values, 64)
    ratios = []
    for _ in range(30):
        _, aux = runner.forward(moe, values, x)
        load = aux["tokens_per_expert"]
        ratios.append(load.max() / load.mean())
        values.update(moe.router.after_step(values, aux))
    assert ratios[0] > 2.5
    assert max(ratios[-5:]) < 1.5
    assert np.argmin(values["router.bias"]) == 0  # the dominant expert was pushed down most


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
@pytest.mark.parametrize("renormalize", [True, False])
def test_bias_picks_experts_but_weights_come_from_unbiased_scores(runner, score, renormalize):
    moe = layer(renormalize=renormalize, score=score)
    values = numpy_weights(moe, seed=2)
    values["router.bias"] = np.array([0.0, -0.3, 0.2, 0.6], np.float32)
    x = random_inputs((2, 6, D), seed=3)
    probe = RouterProbe(moe, "expert_weight", ["expert_index"])
    weight, aux = runner.forward(probe, values, x)
    logits = x.reshape(-1, D).astype(np.float64) @ values["router.weight"]
    scores = expit(logits) if score == "sigmoid" else softmax(logits, -1)
    index = np.argsort(-(scores + values["router.bias"]), -1, kind="stable")[:, :2]
    expected = np.take_along_axis(scores, index, -1)
    if renormalize:
        expected = expected / expected.sum(-1, keepdims=True)
    np.testing.assert_array_equal(aux["expert_index"], index)
    assert not np.array_equal(index, np.argsort(-scores, -1, kind="stable")[:, :2])  # the bias changed choices
    np.testing.assert_allclose(weight, expected, rtol=1e-5, atol=1e-7)


def test_gradient_reaches_the_gate_not_the_bias(runner):
    moe = layer()
    values = numpy_weights(moe)
    x = random_inputs((1, 8, D))
    out = runner.forward_backward(moe, values, x, random_inputs(x.shape, 1))
    assert "router.bias" not in out["grads"]
    assert np.abs(out["grads"]["router.weight"]).sum() > 0
    assert out["aux"]["loss"] == 0  # no balance loss


def test_shell_update_numpy_sets_only_the_given_values(runner):
    moe = layer()
    values = numpy_weights(moe)
    module = runner.module(moe, values)
    new_bias = np.array([0.5, -0.5, 0.25, 0.0], np.float32)
    module.update_numpy({"router.bias": new_bias})
    after = module.numpy_params()
    np.testing.assert_array_equal(after["router.bias"], new_bias)
    for name in values:
        if name != "router.bias":
            np.testing.assert_array_equal(after[name], values[name])
    with pytest.raises(ConfigError, match="router.bais"):
        module.update_numpy({"router.bais": new_bias})


def deepseek_layer(renormalize: bool) -> MoELayer:
    """8 experts in 4 groups of 2, 2 groups kept, top-2, routed scale 2.5: DeepSeek-V3's router shape."""
    options = dict(n_group=4, topk_group=2, routed_scaling_factor=2.5)
    return MoELayer(MoEConfig(d_model=D, ffn_hidden=8, num_experts=8, top_k=2, router="aux_free",
                              expert_type="gelu", renormalize=renormalize, router_options=options))


@pytest.mark.parametrize("renormalize,expected", [(True, [0.6 / 1.4 * 2.5, 0.8 / 1.4 * 2.5]),
                                                  (False, [0.6 * 2.5, 0.8 * 2.5])])
def test_group_limited_choice_by_hand(runner, renormalize, expected):
    """Sigmoid scores s = (0.9, 0.1 | 0.6, 0.5 | 0.8, 0.7 | 0.2, 0.3), bias +0.25 on expert 2.
    Group scores (sum of each group's top 2 of s + b): 1.0, 1.35, 1.5, 0.5 -> groups 2 and 1
    are kept, so expert 0 (s = 0.9, the best alone) is out; top-2 of s + b inside them:
    expert 2 (0.85), expert 4 (0.8). Weights from s alone: 0.6, 0.8, renormalised or not,
    times 2.5."""
    moe = deepseek_layer(renormalize)
    values = numpy_weights(moe)
    scores = np.array([0.9, 0.1, 0.6, 0.5, 0.8, 0.7, 0.2, 0.3])
    values["router.weight"] = np.zeros((D, 8), np.float32)
    values["router.weight"][0] = np.log(scores / (1 - scores))  # logits of the token e_0
    values["router.bias"] = np.array([0, 0, 0.25, 0, 0, 0, 0, 0], np.float32)
    x = np.eye(D, dtype=np.float32)[None, :1]
    weight, aux = runner.forward(RouterProbe(moe, "expert_weight", ["expert_index"]), values, x)
    np.testing.assert_array_equal(aux["expert_index"], [[2, 4]])
    np.testing.assert_allclose(weight, [expected], rtol=1e-6)


@pytest.mark.parametrize("options,message", [
    (dict(n_group=3), "n_group=3: must divide moe.num_experts=8"),
    (dict(n_group=8), "n_group=8: must divide moe.num_experts=8 into groups of at least 2"),
    (dict(n_group=4, topk_group=5), "topk_group=5: must be at most n_group=4"),
    (dict(n_group=4, topk_group=1), "topk_group=1: .* keep at least moe.top_k=3 experts"),
    (dict(topk_group=2), "topk_group=2: needs n_group > 1"),
    (dict(routed_scaling_factor=0.0), "routed_scaling_factor"),
])
def test_bad_group_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        MoELayer(MoEConfig(d_model=D, ffn_hidden=8, num_experts=8, top_k=3, router="aux_free",
                           router_options=options))


def test_sequence_balance_loss_by_hand(runner):
    """DeepSeek-V3's sequence-wise balance loss, top-1 of 4 experts, 2 sequences of 2 tokens,
    sigmoid scores s and shares s / sum s:
    sequence 0: s = (.8, .2, .5, .5) -> expert 0, (.2, .6, .1, .1) -> expert 1; f = (.5, .5, 0, 0),
        P = mean of (.4, .1, .25, .25) and (.2, .6, .1, .1) = (.3, .35, .175, .175): 4 * .325 = 1.3;
    sequence 1: s = (.9, .1, .1, .1), (.7, .1, .1, .1) -> expert 0 twice; f = (1, 0, 0, 0),
        P_0 = (.75 + .7) / 2: 4 * .725 = 2.9.
    Mean 2.1 (over the batch as one sequence it would be 1.7583), times the coefficient."""
    moe = MoELayer(MoEConfig(d_model=4, ffn_hidden=8, num_experts=4, top_k=1, router="aux_free", expert_type="gelu",
                             router_options=dict(sequence_balance_coef=0.01)))
    values = numpy_weights(moe)
    scores = np.array([[.8, .2, .5, .5], [.2, .6, .1, .1], [.9, .1, .1, .1], [.7, .1, .1, .1]])
    values["router.weight"] = np.log(scores / (1 - scores)).astype(np.float32)  # token t is e_t: logits row t
    x = np.eye(4, dtype=np.float32).reshape(2, 2, 4)
    _, aux = runner.forward(moe, values, x, {"token_ids": np.zeros((2, 2), np.int32)})
    np.testing.assert_allclose(aux["sequence_balance_loss"], 2.1, rtol=1e-5)
    np.testing.assert_allclose(aux["loss"], 0.021, rtol=1e-5)
    with pytest.raises(ConfigError, match="needs token_ids"):
        runner.forward(moe, values, x)
