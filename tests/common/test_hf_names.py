"""Our parameter dict <-> HF Llama/Mixtral/Qwen2-MoE per-expert layouts: exact round trip,
HF names, the transposes that make HF's [out, in] expert weights compute what ours compute,
and transformers 5's fused in-memory experts."""
import numpy as np
import pytest

from core.errors import ConfigError
from core.params import init_params
from models.hf_gpt_oss import deinterleaved, from_gpt_oss, gpt_oss_shapes, interleaved, to_gpt_oss
from models.hf_names import from_hf, to_hf
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig


def model_values(router: str = "topk", expert_type: str = "swiglu", nulls: int = 0, shared: int = 0):
    moe = MoEConfig(d_model=16, ffn_hidden=12, num_experts=3, num_null_experts=nulls, top_k=2, router=router,
                    expert_type=expert_type, shared_expert_hidden=shared, shared_expert_gate=shared > 0)
    config = TransformerConfig(vocab_size=20, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                               ffn_hidden=24, max_seq_len=8, moe_every=2, moe=moe)
    return init_params(Transformer(config).param_specs(), seed=0)


def test_round_trip_is_exact_for_every_expert_kind():
    for values in (model_values(), model_values(expert_type="gelu"), model_values("adamoe", nulls=3),
                   model_values(shared=10), model_values("aux_free", shared=10)):
        for style in ("mixtral", "qwen2_moe", "glm4_moe"):
            back = from_hf(to_hf(values, style))
            assert back.keys() == values.keys()
            for name in values:
                assert back[name].shape == values[name].shape and np.array_equal(back[name], values[name]), name


def test_glm4_moe_names():
    """GLM-4.5's plural shared_experts and its router's e_score_correction_bias."""
    hf = to_hf(model_values("aux_free", shared=10), "glm4_moe")
    moe = "model.layers.1.mlp."
    assert {moe + "gate.e_score_correction_bias", moe + "shared_experts.up_proj.weight"} <= set(hf)
    assert not any("shared_expert." in n or "router" in n for n in hf)


def test_mixtral_names_and_layout():
    values = model_values()
    hf = to_hf(values)
    moe = "model.layers.1.block_sparse_moe."
    assert not any(".experts.w_" in n or ".router." in n for n in hf)
    assert {n for n in hf if n.startswith(moe)} == {moe + "gate.weight"} | {
        f"{moe}experts.{j}.{w}.weight" for j in range(3) for w in ("w1", "w2", "w3")}
    assert hf[moe + "gate.weight"].shape == (3, 16)
    assert hf[moe + "experts.2.w1.weight"].shape == (12, 16) and hf[moe + "experts.2.w2.weight"].shape == (16, 12)
    # dense-block and attention names pass through untouched
    for name in ("model.layers.0.mlp.gate_proj.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"):
        assert hf[name] is values[name] or np.array_equal(hf[name], values[name])
    # HF computes y = W x with W [out, in]: the same numbers as our x @ w_stacked[j]
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    for j in range(3):
        ours = (x @ values[moe + "experts.w_gate"][j]) * (x @ values[moe + "experts.w_up"][j])
        theirs = (x @ hf[f"{moe}experts.{j}.w1.weight"].T) * (x @ hf[f"{moe}experts.{j}.w3.weight"].T)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        np.testing.assert_array_equal(ours @ values[moe + "experts.w_down"][j],
                                      ours @ hf[f"{moe}experts.{j}.w2.weight"].T)
    np.testing.assert_array_equal(x @ values[moe + "router.weight"], x @ hf[moe + "gate.weight"].T)


def test_adamoe_null_gate_passes_through():
    values = model_values("adamoe", nulls=3)
    hf = to_hf(values)
    name = "model.layers.1.block_sparse_moe.router.null_weight"
    assert np.array_equal(hf[name], values[name])


def test_missing_expert_in_checkpoint_is_a_config_error():
    hf = to_hf(model_values())
    del hf["model.layers.1.block_sparse_moe.experts.1.w2.weight"]
    with pytest.raises(ConfigError) as info:
        from_hf(hf)
    assert "experts.w_down" in str(info.value) and "[0, 2]" in str(info.value), str(info.value)


def test_qwen2_moe_names_and_fused_experts():
    values = model_values(shared=10)
    hf = to_hf(values, "qwen2_moe")
    moe = "model.layers.1.mlp."
    assert not any("block_sparse_moe" in name for name in hf)
    assert {n for n in hf if n.startswith(moe)} == {moe + "gate.weight", moe + "shared_expert_gate.weight"} | {
        f"{moe}shared_expert.{w}_proj.weight" for w in ("gate", "up", "down")} | {
        f"{moe}experts.{j}.{w}_proj.weight" for j in range(3) for w in ("gate", "up", "down")}
    assert "model.layers.0.mlp.gate_proj.weight" in hf  # the dense block keeps its own names
    ours = "model.layers.1.block_sparse_moe.experts."
    fused = {name: value for name, value in hf.items() if ".experts." not in name}
    fused[moe + "experts.gate_up_proj"] = np.concatenate([values[ours + "w_gate"], values[ours + "w_up"]], 2
                                                         ).transpose(0, 2, 1)  # [E, 2f, d], gate rows first
    fused[moe + "experts.down_proj"] = values[ours + "w_down"].transpose(0, 2, 1)
    back = from_hf(fused)
    assert back.keys() == values.keys()
    for name in values:
        np.testing.assert_array_equal(back[name], values[name], err_msg=name)


def test_two_tensors_for_one_parameter_are_refused():
    """A fused tensor beside per-expert ones, or one block under two prefixes, would overwrite
    one another: refused naming both."""
    per_expert = to_hf(model_values(), "qwen2_moe")
    fused = {"model.layers.1.mlp.experts.gate_up_proj": np.zeros((3, 24, 16), np.float32)}
    with pytest.raises(ConfigError, match="tensors model.layers.1.mlp.experts.gate_up_proj and model.layers.1.mlp."
                                          "experts.0.gate_proj.weight both hold model.layers.1.block_sparse_moe"):
        from_hf({**per_expert, **fused})
    router = {"model.layers.1.block_sparse_moe.gate.weight": per_expert["model.layers.1.mlp.gate.weight"]}
    with pytest.raises(ConfigError, match="both hold model.layers.1.block_sparse_moe.router.weight"):
        from_hf({**per_expert, **router})


def test_gpt_oss_gate_up_alternates_gate_and_up_columns():
    """gpt-oss's fused gate_up_proj [E, d, 2f]: column 2j is gate unit j, column 2j + 1 up unit j."""
    fused = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)
    gate, up = deinterleaved(fused)
    np.testing.assert_array_equal(gate[1, 2], [40, 42, 44, 46])
    np.testing.assert_array_equal(up[1, 2], [41, 43, 45, 47])
    np.testing.assert_array_equal(interleaved(gate, up), fused)
    with pytest.raises(ConfigError, match=r"shape \[2, 5\]: its last axis must be 2 \* f"):
        deinterleaved(np.zeros((2, 5)))


def test_gpt_oss_block_round_trip_names_and_shapes():
    """Our gpt-oss-shaped MoE block (router bias, expert biases) <-> gpt-oss's fused tensors,
    exactly; gpt_oss_shapes gives to_gpt_oss's names and shapes."""
    moe = MoEConfig(d_model=16, ffn_hidden=12, num_experts=3, top_k=2, router_options=dict(gate_bias=True),
                    expert_type="clamped_swiglu", expert_bias=True)
    config = TransformerConfig(vocab_size=20, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, ffn_hidden=24,
                               max_seq_len=8, moe=moe, qkv_bias=True, o_bias=True, attention_sinks=True)
    specs = Transformer(config).param_specs()
    values = {name: np.random.default_rng(0).normal(size=spec.shape).astype(np.float32) for name, spec in specs.items()}
    hf = to_gpt_oss(values)
    block = "model.layers.0.mlp."
    assert {block + "router.bias", block + "experts.gate_up_proj_bias", block + "experts.down_proj_bias",
            "model.layers.0.self_attn.o_proj.bias", "model.layers.0.self_attn.sinks"} <= set(hf)
    assert hf[block + "experts.gate_up_proj"].shape == (3, 16, 24) and hf[block + "router.weight"].shape == (3, 16)
    assert {name: value.shape for name, value in hf.items()} == gpt_oss_shapes({n: s.shape for n, s in specs.items()})
    back = from_gpt_oss(hf)
    assert back.keys() == values.keys() and all(np.array_equal(back[name], values[name]) for name in values)
    with pytest.raises(ConfigError, match="model.layers.0.mlp.gate.weight is not part of a gpt-oss MoE block"):
        from_gpt_oss({"model.layers.0.mlp.gate.weight": np.zeros((3, 16))})
