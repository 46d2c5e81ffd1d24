"""MindSpore and PyTorch agree on the RRE, hash, expert-choice and aux-free routers (DeepSeek-V3's
group-limited choice, routed scaling and sequence-wise balance loss included), top-k with gpt-oss's gate bias, in both dispatch modes and with options their configs do not set (test_routers.py runs each config):
outputs, aux and gradients from the same weights and inputs (rtol 1e-4 / atol 1e-5, as the
layer parity tests), and a bias set between calls of one compiled module is used by the next call."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import PARITY_ATOL, PARITY_RTOL, assert_runs_match, numpy_weights, random_inputs
from tests.support.parity_cases import graph_subset

RTOL, ATOL = PARITY_RTOL, PARITY_ATOL
SHAPE, VOCAB = (3, 10, 16), 50

CASES = [
    dict(router="rre", top_k=1, router_options=dict(num_domains=2, vocab_size=VOCAB, seed=1)),
    dict(router="hash", top_k=1, router_options=dict(vocab_size=VOCAB, seed=2)),
    dict(router="expert_choice", router_options=dict(capacity_factor=2.0)),
    dict(router="expert_choice", router_options=dict(capacity_factor=0.7)),
    dict(router="aux_free", top_k=2, router_options=dict(score="sigmoid", n_group=2, topk_group=1,  # DeepSeek-V3's
                                                         routed_scaling_factor=2.5, sequence_balance_coef=0.1)),
    dict(router="aux_free", top_k=2, router_options=dict(score="softmax")),
    dict(router="topk", top_k=2, router_options=dict(gate_bias=True)),  # gpt-oss's router bias
]


def case_id(case: dict) -> str:
    return "-".join([case["router"]] + [str(v) for v in case["router_options"].values()])


def build(case: dict, dispatch: str):
    layer = MoELayer(MoEConfig(d_model=16, ffn_hidden=24, num_experts=4, dispatch=dispatch, capacity_factor=1.0,
                               expert_type="gelu", expert_init_std=0.2, **case))
    values = numpy_weights(layer, seed=3)
    if "router.bias" in values:  # aux-free's selection bias, top-k's gate bias
        values["router.bias"] = np.array([0.05, -0.1, 0.0, 0.1], np.float32)
    rng = np.random.default_rng(6)
    context = {"token_ids": rng.integers(0, VOCAB, SHAPE[:2]), "domain_ids": rng.integers(0, 2, SHAPE[:2])}
    return layer, values, context


# expert choice fills its own slots: moe.dispatch is not read
RUNS = [(case, dispatch) for case in CASES for dispatch in ("dropless", "capacity")
        if case["router"] != "expert_choice" or dispatch == "dropless"]


IDS = [f"{case_id(c)}-{d}" for c, d in RUNS]
IN_GRAPH = ("rre-2-50-1-capacity", "hash-50-2-dropless", "expert_choice-0.7-dropless",
            "aux_free-sigmoid-2-1-2.5-0.1-capacity")


@pytest.mark.parametrize("run", graph_subset(RUNS, IDS, IN_GRAPH))
def test_forward_backward_parity(torch_runner, ms_runner, run):
    case, dispatch = run
    layer, values, context = build(case, dispatch)
    x, cot = random_inputs(SHAPE, seed=4), random_inputs(SHAPE, seed=5)
    a = torch_runner.forward_backward(layer, values, x, cot, context)
    b = ms_runner.forward_backward(layer, values, x, cot, context)
    assert a["aux"]["tokens_per_expert"].min() > 0  # every expert receives tokens in this case
    assert_runs_match(a, b, RTOL, ATOL)


def test_bias_update_reaches_a_compiled_module(torch_runner, ms_runner):
    import mindspore as ms
    layer, values, context = build(CASES[4], "dropless")
    x, ids = random_inputs(SHAPE, seed=4), {"token_ids": context["token_ids"]}  # for the sequence-wise loss
    module = ms_runner.module(layer, values)
    before = module(ms.Tensor(x), ms.Tensor(ids["token_ids"]))[1]["tokens_per_expert"].asnumpy()
    values["router.bias"] = np.array([-1.0, 1.0, 1.0, -1.0], np.float32)
    module.update_numpy({"router.bias": values["router.bias"]})
    y, aux = module(ms.Tensor(x), ms.Tensor(ids["token_ids"]))
    expected_y, expected_aux = torch_runner.forward(layer, values, x, ids)
    np.testing.assert_allclose(y.asnumpy(), expected_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(aux["tokens_per_expert"].asnumpy(), expected_aux["tokens_per_expert"])
    assert not np.array_equal(before, expected_aux["tokens_per_expert"])
