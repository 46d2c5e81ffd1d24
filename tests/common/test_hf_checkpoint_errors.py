"""HF checkpoint loading (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, GLM-4.5, DeepSeek-V3) refuses bad input with one
line naming the key or tensor, before reading any tensor data; the export round-trips and
refuses what the HF type cannot express; bfloat16 tensors are widened exactly.
Framework-free: checkpoints are written with ``save_hf_checkpoint`` and edited by hand."""
import json
import struct
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from core.errors import ConfigError
from core.params import init_params
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from training.hf_checkpoint import config_from_hf, load_hf_checkpoint, read_header, read_tensor, save_hf_checkpoint


def tiny(moe: bool = True, **settings) -> TransformerConfig:
    return TransformerConfig(vocab_size=32, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=24,
                             max_seq_len=16, moe_every=1 if moe else 0,
                             moe=MoEConfig(d_model=16, ffn_hidden=8, num_experts=4, top_k=2, **settings) if moe else None)


@pytest.fixture
def mixtral(tmp_path):
    config = tiny()
    save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)
    return tmp_path


def edit_config(folder, **changes):
    hf = json.loads((folder / "config.json").read_text())
    hf.update(changes)
    (folder / "config.json").write_text(json.dumps(hf))


def edit_tensors(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_export_round_trips(mixtral):
    config = tiny()
    loaded_config, values = load_hf_checkpoint(mixtral)
    assert (loaded_config.moe.num_experts, loaded_config.moe.top_k, loaded_config.rope_theta) == (4, 2, 10000.0)
    expected = init_params(Transformer(config).param_specs(), seed=0)
    assert values.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(values[name], expected[name])


@pytest.mark.parametrize("changes,message", [
    ({"model_type": "gpt2"}, "model_type='gpt2': supported model types are llama, mixtral, qwen2, qwen2_moe"),
    ({"model_type": "qwen2_moe"}, "num_experts=None: a qwen2_moe config needs an integer >= 1 here"),
    ({"sliding_window": 8}, "sliding_window=8: our transformer implements only None"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types=['sliding_attention', 'full_attention']"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"num_local_experts": None}, "num_local_experts=None: a mixtral config needs an integer >= 1 here"),
    ({"rope_parameters": {"rope_type": "longrope", "factor": 4.0}}, "rope_parameters.rope_type='longrope': only default"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
     "rope_parameters.original_max_position_embeddings=None: YaRN needs a number >= 1 here"),
    ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.type='linear'"),
    ({"intermediate_size": 12}, "tensor model.layers.0.block_sparse_moe.experts.0.w3.weight has shape [8, 16]; "
                                "config.json implies [12, 16]"),
    ({"num_local_experts": 5}, "tensor model.layers.0.block_sparse_moe.gate.weight has shape [4, 16]; "
                               "config.json implies [5, 16]"),
    ({"tie_word_embeddings": True}, "has tensor lm_head.weight, which a 2-layer 4-expert MoE tied-embedding"),
    ({"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"}},
     "quantization_config.quant_method='mxfp4': quantised checkpoints are not loaded; dequantise it first "
     "(transformers: from_pretrained with quantization_config=Mxfp4Config"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quant_method='fp8'.*FineGrainedFP8Config"),
])
def test_config_mismatch_is_one_line_naming_the_key(mixtral, changes, message):
    edit_config(mixtral, **changes)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_hf_checkpoint(mixtral)


def test_missing_and_unexpected_tensors_are_named(mixtral):
    edit_tensors(mixtral, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ConfigError, match="lacks tensor model.layers.1.self_attn.k_proj.weight"):
        load_hf_checkpoint(mixtral)
    edit_tensors(mixtral, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": np.zeros((8, 16), np.float32),
                                              "model.layers.0.self_attn.q_proj.bias": np.zeros(16, np.float32)}))
    with pytest.raises(ConfigError, match="has tensor model.layers.0.self_attn.q_proj.bias"):
        load_hf_checkpoint(mixtral)


def test_missing_files_are_named(tmp_path, mixtral):
    with pytest.raises(ConfigError, match="has no config.json"):
        load_hf_checkpoint(tmp_path / "nowhere")
    (mixtral / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not readable JSON"):
        load_hf_checkpoint(mixtral)
    save_hf_checkpoint(tiny(), init_params(Transformer(tiny()).param_specs(), seed=0), mixtral)
    (mixtral / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "shard-2.safetensors"}}))
    with pytest.raises(ConfigError, match="names shard shard-2.safetensors, which is missing"):
        load_hf_checkpoint(mixtral)


QWEN2_MOE = dict(model_type="qwen2_moe", num_experts=4, moe_intermediate_size=8, shared_expert_intermediate_size=12,
                 norm_topk_prob=True, qkv_bias=True, use_sliding_window=False)


@pytest.mark.parametrize("changes,message", [
    ({"use_sliding_window": True}, "use_sliding_window=True: our transformer implements only False"),
    ({"mlp_only_layers": [1]}, "mlp_only_layers=[1]: our transformer implements only []"),
    ({"decoder_sparse_step": 3}, "decoder_sparse_step=3: must be an integer from 1 to num_hidden_layers"),
    ({"shared_expert_intermediate_size": 16}, "tensor model.layers.0.mlp.shared_expert.up_proj.weight has shape "
                                              "[12, 16]; config.json implies [16, 16]"),
    ({"qkv_bias": False}, "has tensor model.layers.0.self_attn.k_proj.bias"),
])
def test_qwen2_moe_mismatch_is_one_line_naming_the_key(tmp_path, changes, message):
    config = tiny(shared_expert_hidden=12, shared_expert_gate=True)
    config.qkv_bias = True
    save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert {key: hf[key] for key in QWEN2_MOE} == QWEN2_MOE
    loaded, _ = load_hf_checkpoint(tmp_path)
    assert (loaded.qkv_bias, loaded.moe.shared_expert_hidden, loaded.moe.shared_expert_gate) == (True, 12, True)
    edit_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_hf_checkpoint(tmp_path)


@pytest.mark.parametrize("settings,key", [(dict(router="adamoe", num_null_experts=4), "moe.router='adamoe'"),
                                          (dict(renormalize=False), "moe.renormalize=False"),
                                          (dict(shared_expert_hidden=8), "moe.shared_expert_gate=False has no HF "
                                                                         "Qwen2-MoE equivalent")])
def test_export_refuses_what_hf_cannot_express(tmp_path, settings, key):
    config = tiny(**settings)
    with pytest.raises(ConfigError, match=key):
        save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)


@pytest.mark.parametrize("qk_norm,changes,message", [
    ("per_head", {"attention_bias": True}, "attention_bias=True: our transformer implements only False"),
    ("per_head", {"use_sliding_window": True}, "use_sliding_window=True: our transformer implements only False"),
    ("per_head", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor=0.5: a qwen3_moe model rotates whole heads"),
    ("per_head", {"head_dim": 6}, "tensor model.layers.0.self_attn.q_proj.weight has shape [16, 16]; "
                                  "config.json implies [24, 16]"),
    ("across_heads", {"clip_qkv": 8.0}, "clip_qkv=8.0: our transformer implements only None"),
    ("across_heads", {"num_experts": 0}, "num_experts=0: a olmoe config needs an integer >= 1 here"),
])
def test_qwen3_moe_and_olmoe_mismatch_is_one_line_naming_the_key(tmp_path, qk_norm, changes, message):
    config = replace(tiny(), qk_norm=qk_norm)
    save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == {"per_head": "qwen3_moe", "across_heads": "olmoe"}[qk_norm]
    loaded, _ = load_hf_checkpoint(tmp_path)
    assert (loaded.qk_norm, loaded.head_dim, loaded.moe_every, loaded.moe.num_experts) == (qk_norm, 4, 1, 4)
    edit_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_hf_checkpoint(tmp_path)


def test_fused_experts_that_do_not_fit_are_named(tmp_path):
    """A fused tensor beside the per-expert ones it would give, or of an odd [E, 2f, d], is
    refused by name; so is a missing q/k norm."""
    config = replace(tiny(), qk_norm="per_head")
    save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)
    fused = "model.layers.0.mlp.experts.gate_up_proj"
    edit_tensors(tmp_path, lambda t: t.update({fused: np.zeros((4, 16, 16), np.float32)}))
    with pytest.raises(ConfigError, match=f"tensor {fused} holds model.layers.0.mlp.experts.0.gate_proj.weight, "
                                          "which the checkpoint also holds"):
        load_hf_checkpoint(tmp_path)
    edit_tensors(tmp_path, lambda t: t.update({fused: np.zeros((4, 15, 16), np.float32)}))
    with pytest.raises(ConfigError, match=rf"tensor {fused} has shape \[4, 15, 16\]; fused experts are"):
        load_hf_checkpoint(tmp_path)
    edit_tensors(tmp_path, lambda t: [t.pop(fused), t.pop("model.layers.1.self_attn.k_norm.weight")])
    with pytest.raises(ConfigError, match="lacks tensor model.layers.1.self_attn.k_norm.weight"):
        load_hf_checkpoint(tmp_path)


@pytest.mark.parametrize("config,key", [
    (replace(tiny(False), qk_norm="across_heads"), "model.qk_norm='across_heads' in a dense model"),
    (replace(tiny(False), qk_norm="per_head", qkv_bias=True), "model.qkv_bias=True in a dense model"),
    (replace(tiny(False), head_size=6), "model.head_size=6 in a dense model"),
    (replace(tiny(), head_size=6), "model.head_size=6 has no HF Mixtral equivalent"),
    (replace(tiny(shared_expert_hidden=8, shared_expert_gate=True), qk_norm="per_head"),
     "moe.shared_expert_hidden=8 has no HF Qwen3-MoE equivalent"),
    (replace(tiny(), qk_norm="across_heads", qkv_bias=True), "model.qkv_bias=True has no HF OLMoE equivalent"),
    (replace(tiny(), qk_norm="across_heads", moe_every=2), "model.moe_every=2 has no HF OLMoE equivalent"),
])
def test_export_refuses_what_qwen3_moe_and_olmoe_cannot_express(tmp_path, config, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(")):
        save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)


GLM = dict(router="aux_free", shared_expert_hidden=16, router_options=dict(n_group=2, topk_group=1))


@pytest.mark.parametrize("config,key", [
    (tiny(**{**GLM, "shared_expert_gate": True}), "moe.shared_expert_gate=True has no HF GLM-4.5 equivalent"),
    (tiny(**{**GLM, "shared_expert_hidden": 12}), "moe.shared_expert_hidden=12 has no HF GLM-4.5"),
    (tiny(**{**GLM, "router_options": dict(score="softmax")}), "moe.router_options.score='softmax'"),
    (replace(tiny(**GLM), qk_norm="across_heads"), "model.qk_norm='across_heads' has no HF GLM-4.5 equivalent"),
    (replace(tiny(), first_dense_layers=1, num_layers=3), "model.first_dense_layers=1 has no HF Mixtral equivalent"),
    (replace(tiny(), partial_rotary_factor=0.5), "model.partial_rotary_factor=0.5 has no HF Mixtral equivalent"),
    (tiny(router_options=dict(gate_bias=True)), "moe.router_options.gate_bias=True has no HF Mixtral equivalent"),
    (tiny(expert_type="clamped_swiglu"), "moe.expert_bias=False has no HF gpt-oss equivalent: gpt-oss has expert"),
    (tiny(expert_type="clamped_swiglu", expert_bias=True, router_options=dict(gate_bias=True)),
     "model.attention_sinks=False has no HF gpt-oss equivalent: gpt-oss has attention sinks"),
    (tiny(expert_bias=True), "moe.expert_bias=True has no HF Mixtral equivalent"),
    (replace(tiny(), o_bias=True), "model.o_bias=True has no HF Mixtral equivalent"),
    (replace(tiny(False), o_bias=True), "model.o_bias=True in a dense model"),
    (replace(tiny(), attention_sinks=True), "model.attention_sinks=True has no HF Mixtral equivalent"),
    (replace(tiny(), layer_types=["sliding_attention"] * 2, sliding_window=4),
     "model.layer_types=\\['sliding_attention', 'sliding_attention'\\] has no HF Mixtral equivalent"),
    (replace(tiny(False), layer_types=["sliding_attention"] * 2, sliding_window=4),
     "model.layer_types=\\['sliding_attention', 'sliding_attention'\\] in a dense model"),
])
def test_export_refuses_what_glm4_moe_and_others_cannot_express(tmp_path, config, key):
    with pytest.raises(ConfigError, match=key):
        save_hf_checkpoint(config, init_params(Transformer(config).param_specs(), seed=0), tmp_path)


def test_glm4_moe_export_round_trips(tmp_path):
    config = replace(tiny(**GLM), num_layers=3, first_dense_layers=1, partial_rotary_factor=0.5, qkv_bias=True)
    values = init_params(Transformer(config).param_specs(), seed=0)
    save_hf_checkpoint(config, values, tmp_path)
    loaded, back = load_hf_checkpoint(tmp_path)
    assert (loaded.first_dense_layers, loaded.partial_rotary_factor, loaded.qkv_bias) == (1, 0.5, True)
    assert loaded.moe.router_options == {"score": "sigmoid", "n_group": 2, "topk_group": 1, "routed_scaling_factor": 1.0}
    assert back.keys() == values.keys() and all(np.array_equal(back[name], values[name]) for name in values)
    edit_tensors(tmp_path, lambda t: t.update({"model.layers.3.eh_proj.weight": np.zeros((16, 32), np.float32)}))
    with pytest.raises(ConfigError, match="has tensor model.layers.3.eh_proj.weight, which a 3-layer"):
        load_hf_checkpoint(tmp_path)  # a layer past num_hidden_layers that config.json does not announce


def test_a_multi_token_prediction_layer_is_dropped_only_when_asked(tmp_path):
    """GLM-4.5 with its MTP layer (``num_nextn_predict_layers`` 1: ``model.layers.3.*``): one line
    naming a tensor and the opt-in; with ``drop_mtp`` the base model loads unchanged; a layer
    past the announced ones is still refused."""
    config = replace(tiny(**GLM), num_layers=3, first_dense_layers=1)
    values = init_params(Transformer(config).param_specs(), seed=0)
    save_hf_checkpoint(config, values, tmp_path)
    edit_config(tmp_path, num_nextn_predict_layers=1)
    edit_tensors(tmp_path, lambda t: t.update({"model.layers.3.eh_proj.weight": np.zeros((16, 32), np.float32),
                                               "model.layers.3.enorm.weight": np.ones(16, np.float32)}))
    with pytest.raises(ConfigError, match=r"has multi-token-prediction tensor model.layers.3.eh_proj.weight "
                                          r"\(config.json num_nextn_predict_layers=1\).*drop_mtp=True"):
        load_hf_checkpoint(tmp_path)
    loaded, back = load_hf_checkpoint(tmp_path, drop_mtp=True)
    assert back.keys() == values.keys() and all(np.array_equal(back[name], values[name]) for name in values)
    edit_tensors(tmp_path, lambda t: t.update({"model.layers.4.enorm.weight": np.ones(16, np.float32)}))
    with pytest.raises(ConfigError, match="has tensor model.layers.4.enorm.weight, which a 3-layer"):
        load_hf_checkpoint(tmp_path, drop_mtp=True)


LATENT = dict(num_kv_heads=4, kv_lora_rank=8, q_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=6)


@pytest.mark.parametrize("q_lora_rank", [6, 0])
def test_deepseek_v3_export_round_trips_and_refuses_what_it_cannot_express(tmp_path, q_lora_rank):
    """Latent attention (with and without a query rank) over GLM's MoE exports as DeepSeek-V3
    and loads back with every tensor equal; a softmax top-k router or a dense model with
    latent attention has no HF equivalent; uneven key/value heads and attention biases are
    refused by key."""
    config = replace(tiny(**GLM), num_layers=3, first_dense_layers=1, rope_interleave=True,
                     **{**LATENT, "q_lora_rank": q_lora_rank})
    values = init_params(Transformer(config).param_specs(), seed=0)
    save_hf_checkpoint(config, values, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert (hf["model_type"], hf["q_lora_rank"], hf["kv_lora_rank"]) == ("deepseek_v3", q_lora_rank or None, 8)
    loaded, back = load_hf_checkpoint(tmp_path)
    assert replace(loaded, moe=config.moe) == config  # every setting of the model section, latent ones included
    assert back.keys() == values.keys() and all(np.array_equal(back[name], values[name]) for name in values)
    for bad, key in ((replace(config, moe=tiny().moe), "moe.router='topk' has no HF DeepSeek-V3 equivalent"),
                     (replace(config, moe_every=0, first_dense_layers=0, moe=None), "model.kv_lora_rank=8 in a dense")):
        with pytest.raises(ConfigError, match=key):
            save_hf_checkpoint(bad, init_params(Transformer(bad).param_specs(), seed=0), tmp_path / "bad")
    for changes, message in (({"num_key_value_heads": 2}, "num_key_value_heads=2: DeepSeek-V3's latent attention"),
                             ({"attention_bias": True}, "attention_bias=True: our transformer implements only False"),
                             ({"q_lora_rank": 0}, "q_lora_rank=0: expected an integer >= 1 or null")):
        edit_config(tmp_path, **{**hf, **changes})
        with pytest.raises(ConfigError, match=message):
            load_hf_checkpoint(tmp_path)


def test_bfloat16_is_widened_exactly(tmp_path):
    values = np.array([[1.5, -2.0], [0.15625, 3.0e38]], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    table, start = read_header(path)
    np.testing.assert_array_equal(read_tensor(path, table["w"], start)[:, :1], values[:, :1])
    assert abs(read_tensor(path, table["w"], start)[1, 1] / 3.0e38 - 1) < 1e-2


def test_a_transformers_4_qwen1_5_moe_config_maps():
    """Qwen1.5-MoE-A2.7B's published config.json keys (no qkv_bias, layer_types or
    mlp_only_layers; an unused sliding_window with use_sliding_window false)."""
    hf = {"model_type": "qwen2_moe", "decoder_sparse_step": 1, "hidden_act": "silu", "hidden_size": 2048,
          "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21,
          "moe_intermediate_size": 1408, "norm_topk_prob": False, "num_attention_heads": 16, "num_experts": 60,
          "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
          "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632,
          "sliding_window": 32768, "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 151936}
    config = config_from_hf(hf)
    moe = config.moe
    assert (config.qkv_bias, config.moe_every, config.rope_theta, config.ffn_hidden) == (True, 1, 1e6, 5632)
    assert (moe.num_experts, moe.top_k, moe.ffn_hidden, moe.renormalize) == (60, 4, 1408, False)
    assert (moe.shared_expert_hidden, moe.shared_expert_gate, moe.balance_loss_coef) == (5632, True, 0.004)


def test_published_qwen3_moe_and_olmoe_configs_map():
    """Qwen3-30B-A3B's and OLMoE-1B-7B-0924's config.json keys (transformers 4 names): Qwen3's
    128-wide heads are not hidden_size / num_attention_heads = 64."""
    qwen3 = {"model_type": "qwen3_moe", "attention_bias": False, "decoder_sparse_step": 1, "head_dim": 128,
             "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
             "max_window_layers": 48, "mlp_only_layers": [], "moe_intermediate_size": 768, "norm_topk_prob": True,
             "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
             "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
             "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
             "use_sliding_window": False, "vocab_size": 151936}
    config = config_from_hf(qwen3)
    assert (config.qk_norm, config.head_dim, config.num_kv_heads, config.moe_every) == ("per_head", 128, 4, 1)
    assert (config.moe.num_experts, config.moe.top_k, config.moe.ffn_hidden, config.moe.renormalize) == (128, 8, 768, True)
    olmoe = {"model_type": "olmoe", "attention_bias": False, "clip_qkv": None, "hidden_act": "silu", "hidden_size": 2048,
             "intermediate_size": 1024, "max_position_embeddings": 4096, "norm_topk_prob": False,
             "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16,
             "num_key_value_heads": 16, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
             "router_aux_loss_coef": 0.01, "tie_word_embeddings": False, "vocab_size": 50304}
    config = config_from_hf(olmoe)
    assert (config.qk_norm, config.head_dim, config.moe_every, config.moe.shared_expert_hidden) == ("across_heads", 128, 1, 0)
    assert (config.moe.num_experts, config.moe.top_k, config.moe.ffn_hidden, config.moe.renormalize) == (64, 8, 1024, False)


def test_a_glm4_5_air_shaped_config_maps():
    """A config with GLM-4.5-Air's shape: 128-wide heads (96 x 128 != 4096), half of each
    rotating, one dense block first, one shared expert, q/k/v biases."""
    hf = {"model_type": "glm4_moe", "attention_bias": True, "first_k_dense_replace": 1, "head_dim": 128,
          "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 10944, "max_position_embeddings": 131072,
          "moe_intermediate_size": 1408, "n_group": 1, "n_routed_experts": 128, "n_shared_experts": 1,
          "norm_topk_prob": True, "num_attention_heads": 96, "num_experts_per_tok": 8, "num_hidden_layers": 46,
          "num_key_value_heads": 8, "num_nextn_predict_layers": 1, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05,
          "rope_scaling": None, "rope_theta": 1000000, "routed_scaling_factor": 1.0, "tie_word_embeddings": False,
          "topk_group": 1, "use_qk_norm": False, "vocab_size": 151552}
    config = config_from_hf(hf)
    assert (config.head_dim, config.rotary_dim, config.first_dense_layers, config.qkv_bias) == (128, 64, 1, True)
    assert config.moe_layer_indices == list(range(1, 46)) and config.qk_norm == "none"
    moe = config.moe
    assert (moe.router, moe.num_experts, moe.top_k, moe.shared_expert_hidden, moe.shared_expert_gate) == \
        ("aux_free", 128, 8, 1408, False)
