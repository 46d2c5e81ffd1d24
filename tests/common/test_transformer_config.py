"""Transformer settings: bad values stop at construction with one ConfigError line naming
the setting; the dense baseline has the MoE model's active FFN FLOPs. No framework."""
import math

import numpy as np
import pytest

from core.errors import ConfigError
from models.dense_baseline import active_experts_per_token, dense_baseline, ffn_flops_per_token
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig


def config(**settings) -> TransformerConfig:
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=2)
    base = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                max_seq_len=16, moe_every=2, moe=moe)
    return TransformerConfig(**{**base, **settings})


@pytest.mark.parametrize("setting, settings", [
    ("model.d_model", dict(d_model=30, moe=MoEConfig(d_model=30))),
    ("model.d_model", dict(d_model=12, num_heads=4, moe=MoEConfig(d_model=12))),  # odd head size 3
    ("model.num_kv_heads", dict(num_kv_heads=3)),
    ("model.num_heads", dict(num_heads=0)),
    ("model.vocab_size", dict(vocab_size=-1)),
    ("model.ffn_type", dict(ffn_type="relu")),
    ("model.rope_theta", dict(rope_theta=0.0)),
    ("model.moe_every", dict(moe_every=3)),
    ("model.moe", dict(moe=None)),
    ("moe.d_model", dict(moe=MoEConfig(d_model=16))),
    ("moe.top_k", dict(moe=MoEConfig(d_model=32, top_k=0))),
    ("moe.router_options.vocab_size", dict(moe=MoEConfig(d_model=32, num_experts=4, top_k=1, router="hash",
                                                         router_options={"vocab_size": 63}))),
    ("model.qk_rope_head_dim", dict(kv_lora_rank=8, num_kv_heads=4, qk_nope_head_dim=4, qk_rope_head_dim=3,
                                    v_head_dim=4)),
    ("model.v_head_dim", dict(kv_lora_rank=8, num_kv_heads=4, qk_nope_head_dim=4, qk_rope_head_dim=2)),
    ("model.num_kv_heads", dict(kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=4)),
    ("model.rope_interleave", dict(rope_interleave=True)),  # latent attention's only
    ("model.yarn_original_max_seq_len", dict(yarn_factor=4.0)),
    ("model.layer_types", dict(layer_types=["sliding_attention"])),  # one per block
    ("model.sliding_window", dict(layer_types=["full_attention", "sliding_attention"])),
    ("model.layer_types", dict(layer_types=["full_attention", "chunked_attention"])),
    ("model.yarn_mscale_all_dim", dict(yarn_factor=4.0, yarn_original_max_seq_len=8, yarn_mscale_all_dim=1.0)),
])
def test_bad_setting_is_one_line_naming_it(setting, settings):
    with pytest.raises(ConfigError) as info:
        Transformer(config(**settings))
    message = str(info.value)
    assert "\n" not in message and setting in message, message


def test_moe_every_places_moe_blocks():
    assert config(num_layers=6, moe_every=2).moe_layer_indices == [1, 3, 5]
    assert config(num_layers=3, moe_every=1).moe_layer_indices == [0, 1, 2]
    assert config(moe_every=0, moe=None).moe_layer_indices == []
    model = Transformer(config(num_layers=4, moe_every=2))
    assert [b.is_moe for b in model.blocks] == [False, True, False, True]
    assert len(model.moe_layers) == 2


def weight_flops(specs, prefix: str) -> int:
    """2 FLOPs per weight per token for every dense-FFN matrix whose name contains prefix."""
    return sum(2 * math.prod(s.shape) for n, s in specs.items() if prefix in n)


@pytest.mark.parametrize("expert_type", ["swiglu", "gelu"])
def test_dense_baseline_width_is_expert_width_times_top_k(expert_type):
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=8, top_k=2, expert_type=expert_type)
    c = config(moe_every=1, moe=moe, ffn_type=expert_type)
    base = dense_baseline(c)
    assert base.moe_every == 0 and base.moe is None and base.ffn_hidden == 48
    # the baseline's FFN weights, counted from its actual parameters, give the MoE's active FLOPs
    dense_specs = Transformer(base).param_specs()
    assert weight_flops(dense_specs, ".mlp.") == ffn_flops_per_token(c) == ffn_flops_per_token(base)
    assert {n: s.shape for n, s in dense_specs.items() if ".mlp." not in n} == \
        {n: s.shape for n, s in Transformer(c).param_specs().items() if ".block_sparse_moe." not in n}


def test_dense_baseline_matches_total_when_only_some_blocks_are_moe():
    c = config(num_layers=4, moe_every=2, ffn_hidden=40)  # 2 dense of width 40, 2 MoE of 2 x 24
    base = dense_baseline(c)
    assert base.ffn_hidden == (2 * 40 + 2 * 48) // 4
    assert ffn_flops_per_token(base) == ffn_flops_per_token(c)


def test_adamoe_baseline_uses_expected_true_experts():
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, num_null_experts=4, top_k=4, router="adamoe")
    c = config(moe_every=1, moe=moe)
    assert active_experts_per_token(c) == 2.0  # 4 picks, half the slots true
    assert dense_baseline(c).ffn_hidden == 48
    assert dense_baseline(c, active_experts=1.5).ffn_hidden == 36  # a measured mean_true_experts_per_token
    with pytest.raises(ConfigError, match="model.moe_every"):
        dense_baseline(config(moe_every=0, moe=None))


def test_param_names_are_hf_llama_names_for_a_dense_model():
    specs = Transformer(config(moe_every=0, moe=None, num_layers=1, tie_embeddings=False)).param_specs()
    expected = {"model.embed_tokens.weight": (64, 32), "model.norm.weight": (32,), "lm_head.weight": (64, 32),
                "model.layers.0.input_layernorm.weight": (32,), "model.layers.0.post_attention_layernorm.weight": (32,),
                "model.layers.0.self_attn.q_proj.weight": (32, 32), "model.layers.0.self_attn.k_proj.weight": (16, 32),
                "model.layers.0.self_attn.v_proj.weight": (16, 32), "model.layers.0.self_attn.o_proj.weight": (32, 32),
                "model.layers.0.mlp.gate_proj.weight": (48, 32), "model.layers.0.mlp.up_proj.weight": (48, 32),
                "model.layers.0.mlp.down_proj.weight": (32, 48)}
    assert {n: s.shape for n, s in specs.items()} == expected
    assert "lm_head.weight" not in Transformer(config(tie_embeddings=True)).param_specs()
    assert np.all(Transformer(config()).param_specs()["model.norm.weight"].init(None, (3,)) == 1.0)
