"""Upcycling a dense model to an MoE gives the dense model's logits at step 0 on the backend
under test: experts copied (any top-k routing, weights renormalised) or split into finer
experts (uniform router, every expert selected). AdaMoE conversion: the null gate repeats
the pretrained gate's columns and the converted layer sends some assignments to nulls.
Bad conversions are one-line errors."""
import numpy as np
import pytest

from core.errors import ConfigError
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.harness import numpy_weights
from tests.support.model_runs import run_forward
from training.upcycle import to_adamoe, upcycle

DENSE = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                          max_seq_len=16, init_std=0.1, moe_every=0)
TOKENS = np.random.default_rng(0).integers(0, 64, (2, 10)).astype(np.int32)


@pytest.mark.parametrize("settings", [dict(num_experts=4, top_k=2), dict(num_experts=4, top_k=4, split=2, router_std=0),
                                      dict(num_experts=6, top_k=3, split=3, router_std=0, moe_every=2)],
                         ids=["copies", "split2", "split3-every2"])
def test_upcycled_model_gives_dense_logits_at_step_0(runner, settings):
    dense = numpy_weights(Transformer(DENSE), seed=0)
    expected, _ = run_forward(runner, Transformer(DENSE), dense, TOKENS)
    config, values = upcycle(DENSE, dense, **settings)
    model = Transformer(config)
    assert values.keys() == model.param_specs().keys() and model.moe_layers
    logits, aux = run_forward(runner, model, values, TOKENS)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert aux["mean_true_experts_per_token"] == pytest.approx(settings["top_k"])


def test_adamoe_conversion_repeats_the_pretrained_gate(runner):
    config, values = upcycle(DENSE, numpy_weights(Transformer(DENSE), seed=0), num_experts=4, top_k=2, seed=1)
    values = {**values, **{n: v * 30 for n, v in values.items() if n.endswith("router.weight")}}  # sharper routing
    ada_config, ada = to_adamoe(config, values, num_null_experts=8, top_k=4)
    assert (ada_config.moe.router, ada_config.moe.num_null_experts, ada_config.moe.top_k) == ("adamoe", 8, 4)
    gate = values["model.layers.0.block_sparse_moe.router.weight"]
    np.testing.assert_array_equal(ada["model.layers.0.block_sparse_moe.router.null_weight"], np.tile(gate, (1, 2)))
    layer = Transformer(ada_config).moe_layers[0]
    x = np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)
    _, aux = runner.forward(layer, {n: ada[n] for n in layer.param_specs()}, x)
    assert aux["tokens_per_expert"].sum() < 8 * 4  # some assignments went to null experts
    assert 0 < aux["mean_true_experts_per_token"] < 4


def test_bad_conversions_are_one_line():
    dense = numpy_weights(Transformer(DENSE), seed=0)
    with pytest.raises(ConfigError, match="split=5 must divide model.ffn_hidden=48"):
        upcycle(DENSE, dense, num_experts=5, top_k=1, split=5)
    config, values = upcycle(DENSE, dense, num_experts=4, top_k=2)
    with pytest.raises(ConfigError, match="moe_every=1: upcycling starts from a dense model"):
        upcycle(config, values, num_experts=4, top_k=2)
    with pytest.raises(ConfigError, match="num_null_experts=6 must be a multiple of num_experts=4"):
        to_adamoe(config, values, num_null_experts=6, top_k=4)
    with pytest.raises(ConfigError, match="upcycle: the checkpoint lacks model.layers.1.mlp.up_proj.weight"):
        upcycle(DENSE, {n: v for n, v in dense.items() if n != "model.layers.1.mlp.up_proj.weight"},
                num_experts=4, top_k=2, moe_every=2)
