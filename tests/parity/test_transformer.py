"""The transformer gives the same logits, loss, metrics and gradients on MindSpore
(PyNative, or the whole value-and-grad step compiled in GRAPH_MODE) and PyTorch, from the
same weights: a dense model, and 2-layer models with one MoE layer (topk with tied
embeddings, AdaMoE, and the stochastic skip router with the same routing noise on both,
which also checks the score term of the objective).
Tolerance: float32 through two blocks with different kernels and summation orders,
rtol 1e-4 / atol 1e-5 on logits and loss, atol 1e-5 on gradients (which are O(1e-2))."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.harness import PARITY_ATOL, PARITY_RTOL, numpy_weights
from tests.support.model_runs import lm_step

RTOL, ATOL = PARITY_RTOL, PARITY_ATOL
VOCAB = 64

CASES = {  # name: (model settings, routing-noise width: stochastic routers get the same noise on both)
    "dense": (dict(moe_every=0), 0),
    "topk": (dict(moe_every=2, tie_embeddings=True,
                  moe=MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=2, router="topk",
                                expert_init_std=0.1)), 0),
    "adamoe": (dict(moe_every=2, moe=MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, num_null_experts=4,
                                               top_k=4, router="adamoe", expert_init_std=0.1)), 0),
    "skip": (dict(moe_every=2, moe=MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=1, router="skip",
                                             capacity_factor=1.0, expert_init_std=0.1)), 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformer_parity(torch_runner, ms_runner, case):
    settings, noise_width = CASES[case]
    config = TransformerConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                               ffn_hidden=48, max_seq_len=16, init_std=0.1, **settings)
    model = Transformer(config)
    values = numpy_weights(model, seed=1)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, VOCAB, (2, 9)).astype(np.int32)
    noise = rng.random((1, 2, 8, noise_width), dtype=np.float32) if noise_width else None
    a = lm_step(torch_runner, model, values, tokens[:, :-1].astype(np.int64), tokens[:, 1:].astype(np.int64),
                routing_noise=noise)
    b = lm_step(ms_runner, model, values, tokens[:, :-1], tokens[:, 1:], routing_noise=noise)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=RTOL, atol=ATOL)
    assert a["metrics"].keys() == b["metrics"].keys()
    for key in a["metrics"]:
        np.testing.assert_allclose(a["metrics"][key], b["metrics"][key], rtol=RTOL, atol=ATOL, err_msg=key)
    assert a["grads"].keys() == b["grads"].keys() == {n for n, s in model.param_specs().items() if s.trainable}
    for name in a["grads"]:
        assert np.abs(a["grads"][name]).max() > 0, name
        np.testing.assert_allclose(a["grads"][name], b["grads"][name], rtol=RTOL, atol=ATOL, err_msg=name)
