"""HF checkpoints in and out: Llama, Mixtral, Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, OLMoE,
GLM-4.5 (``glm4_moe``), DeepSeek-V3 (``deepseek_v3``) and gpt-oss (``gpt_oss``, dequantised) ``config.json + safetensors (one file or sharded with ``model.safetensors.index.json``;
experts per expert or fused 3-D as transformers 5 holds them), and GGUF files through
transformers.

    config, params = load_hf_checkpoint("path/to/folder")        # or ".../model.gguf"
    save_hf_checkpoint(config, params, "path/to/out")             # transformers loads it

``params`` are numpy arrays under our names (``models.hf_names``). Every check runs on the
config and the safetensors headers before any tensor is read: an unknown model type, a
setting our transformer does not implement, a missing, unexpected or misshapen tensor is one
``ConfigError`` naming the key or tensor. bfloat16 tensors are widened to float32 (numpy has
no bfloat16), so the safetensors path needs neither torch nor transformers; GGUF does.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
from safetensors.numpy import save_file

from core.errors import ConfigError
from models.hf_gpt_oss import from_gpt_oss, gpt_oss_shapes, to_gpt_oss
from models.hf_names import from_hf, hf_shapes, to_hf, unfused_shapes
from models.moe_config import MoEConfig
from models.rotary import yarn_mscale
from models.transformer import Transformer
from models.transformer_config import TransformerConfig

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
          "U8": np.uint8, "BOOL": np.bool_}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                 "olmoe": "OlmoeForCausalLM", "glm4_moe": "Glm4MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
                 "gpt_oss": "GptOssForCausalLM"}
SIZE_KEYS = {"mixtral": ("num_local_experts", "num_experts_per_tok"),
             "qwen2_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                           "shared_expert_intermediate_size"),
             "qwen3_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
             "olmoe": ("num_experts", "num_experts_per_tok"),
             "glm4_moe": ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts"),
             "deepseek_v3": ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
                             "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
             "gpt_oss": ("num_local_experts", "num_experts_per_tok")}
GROUPED_SIGMOID = ("glm4_moe", "deepseek_v3")  # routed by the aux_free router's sigmoid group-limited choice
MTP_LAYER = re.compile(r"model\.layers\.(\d+)\.")
SPARSE_STEP = ("qwen2_moe", "qwen3_moe")
WINDOWED = ("qwen2", "qwen3", "gpt_oss")  # types whose layer_types may hold sliding_attention blocks  # types whose decoder_sparse_step is our moe_every
HEAD_DIM = ("qwen3", "qwen3_moe", "glm4_moe", "gpt_oss")  # types whose head_dim may differ from hidden_size / num_attention_heads
NO_ATTENTION_BIAS, NO_WINDOW = ("attention_bias", False), ("sliding_window", None)
FIXED = {"llama": [NO_ATTENTION_BIAS, NO_WINDOW], "mixtral": [NO_ATTENTION_BIAS, NO_WINDOW],
         "qwen2": [], "qwen2_moe": [("use_sliding_window", False)],
         "qwen3": [NO_ATTENTION_BIAS],  # Qwen3 biases o_proj too
         "qwen3_moe": [("use_sliding_window", False), NO_ATTENTION_BIAS],
         "olmoe": [NO_ATTENTION_BIAS, NO_WINDOW, ("clip_qkv", None)],
         "glm4_moe": [NO_WINDOW],  # GLM's attention_bias is on q, k and v only: our qkv_bias
         "deepseek_v3": [NO_ATTENTION_BIAS], "gpt_oss": []}  # gpt-oss's attention_bias: q, k, v and o


def style(model_type: str) -> str:
    """The MoE tensor layout of an HF model type (``models.hf_names``)."""
    return {"llama": "mixtral", "mixtral": "mixtral", "glm4_moe": "glm4_moe", "deepseek_v3": "deepseek_v3",
            "gpt_oss": "gpt_oss"}.get(model_type, "qwen2_moe")


def to_layout(params: Dict[str, np.ndarray], layout: str) -> Dict[str, np.ndarray]:
    """Our params -> HF tensors in ``layout`` (a ``style``)."""
    return to_gpt_oss(params) if layout == "gpt_oss" else to_hf(params, layout)


def from_layout(weights: Dict[str, np.ndarray], layout: str) -> Dict[str, np.ndarray]:
    """HF tensors in ``layout`` (a ``style``) -> our params."""
    return from_gpt_oss(weights) if layout == "gpt_oss" else from_hf(weights)


def rope_settings(hf: Dict[str, Any], kind: str) -> Tuple[float, float, Dict[str, Any]]:
    """(rope_theta, partial_rotary_factor, YaRN keys of our config) from a transformers 4
    (top-level keys, ``rope_scaling``) or 5 (``rope_parameters``) config; rotary types other
    than default and YaRN are refused, and so is partial rotary outside GLM-4.5 (whose
    transformers config defaults it to 0.5)."""
    key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    rope = hf.get(key) or {}
    field = "type" if "type" in rope and "rope_type" not in rope else "rope_type"
    rope_type = rope.get(field, "default")
    if rope_type not in ("default", "yarn"):
        raise ConfigError(f"config.json {key}.{field}={rope_type!r}: only default and yarn rotary positions are "
                          "implemented")
    default = 0.5 if kind == "glm4_moe" else 1.0
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", default))
    if partial != 1.0 and kind != "glm4_moe":
        raise ConfigError(f"config.json partial_rotary_factor={partial!r}: a {kind} model rotates whole heads")
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    return theta, float(partial), yarn_settings(rope, key, kind) if rope_type == "yarn" else {}


def yarn_settings(rope: Dict[str, Any], key: str, kind: str) -> Dict[str, Any]:
    """A YaRN ``rope_parameters``/``rope_scaling`` dict -> our ``yarn_*`` keys; the attention
    factor derived as transformers does (mscale / mscale_all_dim, else 0.1 ln(s) + 1)."""
    factor, original = rope.get("factor"), rope.get("original_max_position_embeddings")
    for name, value in (("factor", factor), ("original_max_position_embeddings", original)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"config.json {key}.{name}={value!r}: YaRN needs a number >= 1 here")
    mscale, all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
    attention = rope.get("attention_factor") or (
        yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim) if mscale and all_dim else yarn_mscale(factor))
    return {"yarn_factor": float(factor), "yarn_original_max_seq_len": int(original),
            "yarn_beta_fast": float(rope.get("beta_fast") or 32.0), "yarn_beta_slow": float(rope.get("beta_slow") or 1.0),
            "yarn_attention_factor": float(attention), "yarn_truncate": bool(rope.get("truncate", True)),
            "yarn_mscale_all_dim": float(all_dim or 0.0) if kind == "deepseek_v3" else 0.0}


def check_settings(hf: Dict[str, Any], kind: str) -> None:
    """Settings our transformer does not implement, one line naming the key."""
    fixed = [("hidden_act", "silu"), ("mlp_bias", False), ("mlp_only_layers", [])] + FIXED[kind]
    for key, allowed in fixed:
        if hf.get(key, allowed) != allowed:
            raise ConfigError(f"config.json {key}={hf[key]!r}: our transformer implements only {allowed!r}")
    layer_types = hf.get("layer_types") or []
    if kind not in WINDOWED and any(layer != "full_attention" for layer in layer_types):
        raise ConfigError(f"config.json layer_types={layer_types!r}: only full_attention layers are implemented")
    step = hf.get("decoder_sparse_step", 1)
    if kind in SPARSE_STEP and not (isinstance(step, int) and 1 <= step <= hf["num_hidden_layers"]):
        raise ConfigError(f"config.json decoder_sparse_step={step!r}: must be an integer from 1 to num_hidden_layers")


def check_unquantised(hf: Dict[str, Any]) -> None:
    """Quantised safetensors (gpt-oss's MXFP4 experts, DeepSeek-V3's FP8 release, bitsandbytes)
    are refused in one line that says how to dequantise them (a GGUF file's config says gguf:
    transformers has dequantised it, ``load_gguf``)."""
    quant = hf.get("quantization_config")
    if not quant:
        return
    method = quant.get("quant_method") if isinstance(quant, dict) else quant
    how = ("Mxfp4Config(dequantize=True)" if method == "mxfp4" else
           "FineGrainedFP8Config(dequantize=True)" if method == "fp8" else "its dequantize option")
    raise ConfigError(f"config.json quantization_config.quant_method={method!r}: quantised checkpoints are not "
                      f"loaded; dequantise it first (transformers: from_pretrained with quantization_config={how}, "
                      "then save_pretrained) and load that folder")


def config_from_hf(hf: Dict[str, Any]) -> TransformerConfig:
    """An HF config dict of a type in ``ARCHITECTURES`` -> our TransformerConfig (one-line
    error naming the key)."""
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"config.json model_type={kind!r}: supported model types are {', '.join(ARCHITECTURES)}")
    if kind == "qwen3_moe" and "num_experts" not in hf:  # transformers 5 saves Qwen3-MoE's under this alias
        hf = {**hf, "num_experts": hf.get("num_local_experts")}
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    for key in required + SIZE_KEYS.get(kind, ()):
        if not isinstance(hf.get(key), int) or isinstance(hf.get(key), bool) or hf[key] < 1:
            raise ConfigError(f"config.json {key}={hf.get(key)!r}: a {kind} config needs an integer >= 1 here")
    check_settings(hf, kind)
    heads, latent = hf["num_attention_heads"], latent_settings(hf, kind)
    head_size = hf.get("head_dim") if kind in HEAD_DIM and hf.get("head_dim") != hf["hidden_size"] // heads else 0
    if not (head_size or latent) and hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise ConfigError(f"config.json head_dim={hf['head_dim']}: must be hidden_size / num_attention_heads "
                          f"= {hf['hidden_size'] // heads}")
    theta, partial, yarn = rope_settings(hf, kind)
    moe = moe_from_hf(hf, kind) if kind in SIZE_KEYS else None
    glm, oss = kind == "glm4_moe", kind == "gpt_oss"
    grouped = kind in GROUPED_SIGMOID
    qk_norm = {"qwen3": "per_head", "qwen3_moe": "per_head", "olmoe": "across_heads"}.get(kind, "none")
    return TransformerConfig(vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                             num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads, head_size=head_size,
                             ffn_hidden=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
                             rope_theta=theta, partial_rotary_factor=partial, norm_eps=hf.get("rms_norm_eps", 1e-6),
                             tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                             qkv_bias=kind == "qwen2" or bool(hf.get("attention_bias" if glm or oss else "qkv_bias",
                                                                     kind == "qwen2_moe")),
                             o_bias=oss and bool(hf.get("attention_bias", True)), attention_sinks=oss,
                             qk_norm="per_head" if glm and hf.get("use_qk_norm") else qk_norm,
                             init_std=hf.get("initializer_range", 0.02),
                             moe_every=hf.get("decoder_sparse_step", 1) if kind in SPARSE_STEP else int(bool(moe)),
                             first_dense_layers=hf.get("first_k_dense_replace", 0) if grouped else 0,
                             moe=moe, **latent, **yarn, **window_settings(hf, kind)).validate("config.json")


def window_settings(hf: Dict[str, Any], kind: str) -> Dict[str, Any]:
    """Qwen2's and Qwen3's sliding-window blocks (``layer_types``, ``sliding_window``) under
    our names; {} when every block attends fully."""
    layer_types = list(hf.get("layer_types") or [])
    if kind not in WINDOWED or "sliding_attention" not in layer_types:
        return {}
    known = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if known:
        raise ConfigError(f"config.json layer_types has {known[0]!r}: only full_attention and sliding_attention "
                          "layers are implemented")
    return {"layer_types": layer_types, "sliding_window": hf.get("sliding_window") or 0}


def latent_settings(hf: Dict[str, Any], kind: str) -> Dict[str, Any]:
    """DeepSeek-V3's multi-head latent attention settings under our names ({} for the other
    types); its keys and values have as many heads as its queries."""
    if kind != "deepseek_v3":
        return {}
    heads = hf["num_attention_heads"]
    if hf.get("num_key_value_heads") not in (None, heads):
        raise ConfigError(f"config.json num_key_value_heads={hf['num_key_value_heads']!r}: DeepSeek-V3's latent "
                          f"attention has as many key/value heads as query heads ({heads})")
    rank = hf.get("q_lora_rank")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise ConfigError(f"config.json q_lora_rank={rank!r}: expected an integer >= 1 or null (no query compression)")
    names = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    return {"q_lora_rank": rank or 0, "rope_interleave": bool(hf.get("rope_interleave", True)),
            **{name: hf[name] for name in names}}


def moe_from_hf(hf: Dict[str, Any], kind: str) -> MoEConfig:
    """The MoE section of an HF MoE config: softmax top-k (``topk``) for Mixtral, Qwen and
    OLMoE; GLM-4.5's and DeepSeek-V3's sigmoid, group-limited, bias-corrected routing is
    ``aux_free`` with its options, and their ``n_shared_experts`` one ungated shared expert of
    their summed width."""
    k, d = hf["num_experts_per_tok"], hf["hidden_size"]
    if kind in GROUPED_SIGMOID:
        options = {"score": "sigmoid", "n_group": hf.get("n_group", 1), "topk_group": hf.get("topk_group", 1),
                   "routed_scaling_factor": hf.get("routed_scaling_factor", 1.0)}
        return MoEConfig(d_model=d, ffn_hidden=hf["moe_intermediate_size"], num_experts=hf["n_routed_experts"], top_k=k,
                         router="aux_free", renormalize=bool(hf.get("norm_topk_prob", True)),
                         shared_expert_hidden=hf["moe_intermediate_size"] * hf["n_shared_experts"],
                         balance_loss_coef=0.0, z_loss_coef=0.0, router_options=options)
    if kind == "gpt_oss":
        return MoEConfig(d_model=d, ffn_hidden=hf["intermediate_size"], num_experts=hf["num_local_experts"], top_k=k,
                         router="topk", renormalize=True, router_options={"gate_bias": True},
                         expert_type="clamped_swiglu", expert_bias=True, swiglu_alpha=hf.get("swiglu_alpha", 1.702),
                         swiglu_limit=hf.get("swiglu_limit", 7.0),
                         balance_loss_coef=hf.get("router_aux_loss_coef", 0.0) * k, z_loss_coef=0.0)
    qwen, mixtral = kind == "qwen2_moe", kind == "mixtral"
    return MoEConfig(d_model=d, ffn_hidden=hf["moe_intermediate_size" if kind in SPARSE_STEP else "intermediate_size"],
                     num_experts=hf["num_local_experts" if mixtral else "num_experts"], top_k=k, router="topk",
                     renormalize=True if mixtral else bool(hf.get("norm_topk_prob", False)),
                     shared_expert_hidden=hf["shared_expert_intermediate_size"] if qwen else 0,
                     shared_expert_gate=qwen,
                     balance_loss_coef=hf.get("router_aux_loss_coef", 0.0) * k, z_loss_coef=0.0)


def export_type(config: TransformerConfig) -> str:
    """The HF model type that expresses ``config`` (one line naming the first key that none does):
    Llama (dense), Qwen2 (dense with q/k/v biases), Qwen3 (dense with per-head q/k norm), Mixtral (top-k in every block), Qwen2-MoE
    (top-k with a gated shared expert, q/k/v biases optional, MoE every N blocks), Qwen3-MoE
    (per-head q/k norm, MoE every N blocks), OLMoE (q/k norm across heads, MoE in every block)
    GLM-4.5 (the ``aux_free`` router with sigmoid scores, ungated shared experts) or DeepSeek-V3
    (GLM-4.5's MoE blocks with multi-head latent attention: ``model.kv_lora_rank`` > 0) or gpt-oss
    (``moe.expert_type: clamped_swiglu`` with expert and router biases, sinks, o_proj bias)."""
    c, moe = config, config.moe
    if c.ffn_type != "swiglu":
        raise ConfigError(f"model.ffn_type={c.ffn_type!r}: HF Llama/Mixtral/Qwen2 have SwiGLU FFNs only")
    whole_heads = c.head_size in (0, c.d_model // c.num_heads)
    if c.moe_every == 0:
        qwen3 = c.qk_norm == "per_head"
        for ok, key, value in ((c.qk_norm in ("none", "per_head"), "model.qk_norm", c.qk_norm),
                               (not (qwen3 and c.qkv_bias), "model.qkv_bias", c.qkv_bias),
                               (whole_heads or qwen3, "model.head_size", c.head_size),
                               (c.partial_rotary_factor == 1.0, "model.partial_rotary_factor", c.partial_rotary_factor),
                               (c.kv_lora_rank == 0, "model.kv_lora_rank", c.kv_lora_rank),
                               (not c.layer_types or qwen3 or c.qkv_bias, "model.layer_types", c.layer_types),
                               (not c.o_bias, "model.o_bias", c.o_bias),
                               (not c.attention_sinks, "model.attention_sinks", c.attention_sinks)):
            if not ok:
                raise ConfigError(f"{key}={value!r} in a dense model (model.moe_every=0): HF Llama, Qwen2 and Qwen3 "
                                  "have no such setting")
        return "qwen3" if qwen3 else "qwen2" if c.qkv_bias else "llama"
    if c.kv_lora_rank:
        kind = "deepseek_v3"
    elif moe.router == "aux_free":
        kind = "glm4_moe"
    elif moe.expert_type == "clamped_swiglu":
        kind = "gpt_oss"
    else:
        by_norm = {"per_head": "qwen3_moe", "across_heads": "olmoe"}
        kind = by_norm.get(c.qk_norm) or ("qwen2_moe" if moe.shared_expert_hidden or c.qkv_bias else "mixtral")
    name = {"mixtral": "Mixtral", "qwen2_moe": "Qwen2-MoE", "qwen3_moe": "Qwen3-MoE", "olmoe": "OLMoE",
            "glm4_moe": "GLM-4.5", "deepseek_v3": "DeepSeek-V3", "gpt_oss": "gpt-oss"}[kind]
    glm, oss = kind in GROUPED_SIGMOID, kind == "gpt_oss"
    rules = [(moe.router == "aux_free", "moe.router", moe.router, "routes by sigmoid scores with a bias (aux_free)")
             ] if glm else [(moe.router == "topk", "moe.router", moe.router, "routes by softmax top-k")]
    rules += [(moe.num_null_experts == 0, "moe.num_null_experts", moe.num_null_experts, "has no null experts"),
              (oss or moe.expert_type == "swiglu", "moe.expert_type", moe.expert_type, "has SwiGLU experts"),
              (moe.expert_bias == oss, "moe.expert_bias", moe.expert_bias,
               "has expert biases" if oss else "has bias-free experts")]
    if glm:
        score = moe.router_options.get("score", "sigmoid")
        rules += [(score == "sigmoid", "moe.router_options.score", score, "scores experts by sigmoid"),
                  (moe.shared_expert_hidden > 0 and moe.shared_expert_hidden % moe.ffn_hidden == 0,
                   "moe.shared_expert_hidden", moe.shared_expert_hidden,
                   f"has n_shared_experts >= 1 shared experts of moe.ffn_hidden={moe.ffn_hidden} each"),
                  (not moe.shared_expert_gate, "moe.shared_expert_gate", moe.shared_expert_gate,
                   "adds its shared experts ungated"),
                  (c.qk_norm != "across_heads", "model.qk_norm", c.qk_norm, "normalises q/k per head or not at all")]
    else:
        gate_bias = moe.router_options.get("gate_bias", False)
        rules += [(gate_bias == oss, "moe.router_options.gate_bias", gate_bias,
                   "has a router bias" if oss else "has no router bias"),
                  (c.first_dense_layers == 0, "model.first_dense_layers", c.first_dense_layers,
                   "has no dense first blocks"),
                  (c.partial_rotary_factor == 1.0, "model.partial_rotary_factor", c.partial_rotary_factor,
                   "rotates whole heads")]
    rules += [(oss or not c.layer_types, "model.layer_types", c.layer_types, "attends fully in every block"),
              (c.o_bias == (oss and c.qkv_bias), "model.o_bias", c.o_bias,
               "biases o_proj exactly when it biases q/k/v" if oss else "has no attention output bias"),
              (c.attention_sinks == oss, "model.attention_sinks", c.attention_sinks,
               "has attention sinks" if oss else "has no attention sinks")]
    if kind in ("mixtral", "olmoe", "glm4_moe", "deepseek_v3", "gpt_oss"):
        rules += [(c.moe_every == 1, "model.moe_every", c.moe_every, "has an MoE in every block")]
    if kind not in ("qwen3_moe", "glm4_moe", "deepseek_v3", "gpt_oss"):
        rules += [(whole_heads, "model.head_size", c.head_size, "has heads of d_model / num_heads features")]
    if kind == "gpt_oss":
        rules += [(moe.renormalize, "moe.renormalize", moe.renormalize, "renormalises the top-k weights"),
                  (c.qk_norm == "none", "model.qk_norm", c.qk_norm, "has no q/k norm")]
    elif kind == "mixtral":
        rules += [(moe.renormalize, "moe.renormalize", moe.renormalize, "renormalises the top-k weights")]
    elif kind == "qwen2_moe":
        rules += [(moe.shared_expert_hidden > 0, "moe.shared_expert_hidden", moe.shared_expert_hidden,
                   "has a shared expert in every MoE block"),
                  (moe.shared_expert_gate, "moe.shared_expert_gate", moe.shared_expert_gate,
                   "gates its shared expert")]
    elif not glm:
        rules += [(moe.shared_expert_hidden == 0, "moe.shared_expert_hidden", moe.shared_expert_hidden,
                   "has no shared expert"),
                  (not c.qkv_bias, "model.qkv_bias", c.qkv_bias, "has no q/k/v-only biases")]
    for ok, key, value, rule in rules:
        if not ok:
            raise ConfigError(f"{key}={value!r} has no HF {name} equivalent: {name} {rule}")
    return kind


def rope_parameters(config: TransformerConfig) -> Dict[str, Any]:
    """transformers 5's ``rope_parameters`` of our config: default, or YaRN's keys."""
    c = config
    if c.yarn is None:
        return {"rope_type": "default", "rope_theta": c.rope_theta}
    yarn = {"rope_type": "yarn", "rope_theta": c.rope_theta, "factor": c.yarn_factor,
            "original_max_position_embeddings": c.yarn_original_max_seq_len, "beta_fast": c.yarn_beta_fast,
            "beta_slow": c.yarn_beta_slow, "attention_factor": c.yarn.attention_factor, "truncate": c.yarn_truncate}
    return {**yarn, "mscale_all_dim": c.yarn_mscale_all_dim} if c.yarn_mscale_all_dim else yarn


def config_to_hf(config: TransformerConfig) -> Dict[str, Any]:
    """Our config -> the HF config dict of ``export_type(config)``."""
    c, moe, kind = config, config.moe, export_type(config)
    hf = {"architectures": [ARCHITECTURES[kind]], "model_type": kind, "vocab_size": c.vocab_size,
          "hidden_size": c.d_model, "intermediate_size": c.ffn_hidden,
          "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "num_key_value_heads": c.num_kv_heads, "max_position_embeddings": c.max_seq_len,
          "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
          "rope_parameters": rope_parameters(c),
          "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.init_std, "hidden_act": "silu",
          "dtype": "float32"}
    if kind == "llama":
        return {**hf, "attention_bias": False, "mlp_bias": False}
    windows = {"use_sliding_window": bool(c.layer_types), "sliding_window": c.sliding_window if c.layer_types else None,
               "layer_types": c.layer_types or ["full_attention"] * c.num_layers}
    if kind == "qwen2":
        return {**hf, **windows}
    if kind == "qwen3":
        return {**hf, **windows, "attention_bias": False, "head_dim": c.head_dim}
    if kind == "mixtral":
        return {**hf, "intermediate_size": moe.ffn_hidden, "num_local_experts": moe.num_experts,
                "num_experts_per_tok": moe.top_k, "router_aux_loss_coef": moe.balance_loss_coef / moe.top_k,
                "router_jitter_noise": 0.0, "sliding_window": None}
    if kind in GROUPED_SIGMOID:
        options = moe.router_options
        grouped = {"moe_intermediate_size": moe.ffn_hidden, "n_routed_experts": moe.num_experts,
                   "num_experts_per_tok": moe.top_k, "n_shared_experts": moe.shared_expert_hidden // moe.ffn_hidden,
                   "norm_topk_prob": moe.renormalize, "n_group": options.get("n_group", 1),
                   "topk_group": options.get("topk_group", 1),
                   "routed_scaling_factor": options.get("routed_scaling_factor", 1.0),
                   "first_k_dense_replace": c.first_dense_layers}
        if kind == "deepseek_v3":
            return {**hf, **grouped, "num_key_value_heads": c.num_heads, "attention_bias": False,
                    "q_lora_rank": c.q_lora_rank or None, "kv_lora_rank": c.kv_lora_rank,
                    "qk_nope_head_dim": c.qk_nope_head_dim, "qk_rope_head_dim": c.qk_rope_head_dim,
                    "v_head_dim": c.v_head_dim, "rope_interleave": c.rope_interleave, "num_nextn_predict_layers": 0}
        factor = c.partial_rotary_factor
        return {**hf, **grouped, "rope_parameters": {**hf["rope_parameters"], "partial_rotary_factor": factor},
                "partial_rotary_factor": factor, "head_dim": c.head_dim, "attention_bias": c.qkv_bias,
                "use_qk_norm": c.qk_norm == "per_head"}
    if kind == "gpt_oss":
        return {**hf, "intermediate_size": moe.ffn_hidden, "num_local_experts": moe.num_experts,
                "num_experts_per_tok": moe.top_k, "router_aux_loss_coef": moe.balance_loss_coef / moe.top_k,
                "head_dim": c.head_dim, "attention_bias": c.qkv_bias, "swiglu_alpha": moe.swiglu_alpha,
                "swiglu_limit": moe.swiglu_limit, "sliding_window": windows["sliding_window"],
                "layer_types": windows["layer_types"]}
    routed = {"num_experts": moe.num_experts, "num_experts_per_tok": moe.top_k, "norm_topk_prob": moe.renormalize,
              "router_aux_loss_coef": moe.balance_loss_coef / moe.top_k}
    if kind == "olmoe":
        return {**hf, **routed, "intermediate_size": moe.ffn_hidden, "attention_bias": False, "clip_qkv": None}
    sparse = {"moe_intermediate_size": moe.ffn_hidden, "decoder_sparse_step": c.moe_every, "mlp_only_layers": [],
              "use_sliding_window": False}
    if kind == "qwen3_moe":
        return {**hf, **routed, **sparse, "attention_bias": False, "head_dim": c.head_dim}
    return {**hf, **routed, **sparse, "shared_expert_intermediate_size": moe.shared_expert_hidden,
            "qkv_bias": c.qkv_bias}


def read_header(path: Path) -> Tuple[Dict[str, dict], int]:
    """A safetensors file's tensor table (name -> dtype, shape, data_offsets) and where
    its data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ConfigError(f"{path} is not a safetensors file (shorter than its header)")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise ConfigError(f"{path} is not a safetensors file (unreadable header)") from None
    header.pop("__metadata__", None)
    return header, 8 + length


def read_tensor(path: Path, entry: dict, data_start: int) -> np.ndarray:
    """One tensor from a safetensors file; BF16 widened to float32."""
    start, end = entry["data_offsets"]
    raw = np.fromfile(path, dtype=np.uint8, count=end - start, offset=data_start + start)
    if entry["dtype"] == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
    if entry["dtype"] not in DTYPES:
        raise ConfigError(f"{path}: tensor dtype {entry['dtype']} is not supported")
    return raw.view(np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")).reshape(entry["shape"]).astype(np.float32)


def read_json(path: Path) -> Dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not readable JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return value


def tensor_files(folder: Path) -> Dict[str, Path]:
    """HF tensor name -> the safetensors file that holds it (sharded or not)."""
    if (folder / INDEX).exists():
        weight_map = read_json(folder / INDEX).get("weight_map", {})
        missing = sorted({file for file in weight_map.values() if not (folder / file).exists()})
        if missing:
            raise ConfigError(f"{folder / INDEX} names shard {missing[0]}, which is missing")
        return {name: folder / file for name, file in weight_map.items()}
    if not (folder / SINGLE).exists():
        raise ConfigError(f"{folder} has neither {SINGLE} nor {INDEX}")
    return {name: folder / SINGLE for name in read_header(folder / SINGLE)[0]}


def check_tensors(config: TransformerConfig, found: Dict[str, tuple], source: str, layout: str) -> None:
    """The checkpoint's HF tensor names and shapes (MoE tensors in ``layout``, see
    ``models.hf_names``; fused experts as the per-expert tensors they hold) against what
    ``config`` needs: every tensor is needed and every needed one is there."""
    ours = {name: spec.shape for name, spec in Transformer(config).param_specs().items()}
    expected = gpt_oss_shapes(ours) if layout == "gpt_oss" else hf_shapes(ours, layout)
    found = found if layout == "gpt_oss" else unfused_shapes(found, layout)
    for name, shape in expected.items():
        if name not in found:
            raise ConfigError(f"{source} lacks tensor {name} (shape {list(shape)}), which config.json implies")
        if tuple(found[name]) != shape:
            raise ConfigError(f"{source}: tensor {name} has shape {list(found[name])}; config.json implies {list(shape)}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ConfigError(f"{source} has tensor {extra[0]}, which a {config_summary(config)} model does not have")


def config_summary(config: TransformerConfig) -> str:
    moe = config.moe
    kind = f"{moe.num_experts}-expert MoE" if config.moe_every else "dense"
    return f"{config.num_layers}-layer {kind}{' tied-embedding' if config.tie_embeddings else ''}"


def gguf_model(path: Path):
    """transformers' model of a GGUF file, dequantised to float32 (needs transformers, gguf and
    torch)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as error:
        raise ConfigError(f"{path}: loading GGUF needs transformers, gguf and torch ({error}); "
                          "run: source scripts/setup_env.sh hf") from None
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


def hf_model_weights(model) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """A transformers model's HF config dict and float32 weights as numpy copies (a tied
    lm_head left out)."""
    hf = model.config.to_dict()
    weights = {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}
    if hf.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)
    return hf, weights


def load_gguf(path: Path) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """A GGUF file's HF config dict and float32 weights, dequantised by transformers."""
    return hf_model_weights(gguf_model(path))


def mtp_tensors(hf: Dict[str, Any], names, source: str, drop_mtp: bool) -> set:
    """The names of the multi-token-prediction layers' tensors (GLM-4.5's and DeepSeek-V3's
    ``model.layers.{L..L+n-1}.*``, L = num_hidden_layers, n = num_nextn_predict_layers) that
    ``drop_mtp`` leaves out; without it their presence is one line naming the first."""
    layers, extra = hf.get("num_hidden_layers"), hf.get("num_nextn_predict_layers") or 0
    if not isinstance(layers, int) or not isinstance(extra, int):
        return set()
    found = sorted(name for name in names if MTP_LAYER.match(name) and
                   layers <= int(MTP_LAYER.match(name)[1]) < layers + extra)
    if found and not drop_mtp:
        raise ConfigError(f"{source} has multi-token-prediction tensor {found[0]} (config.json "
                          f"num_nextn_predict_layers={extra}), which our transformer has no use for: load with "
                          "drop_mtp=True (scripts/generate.py: --drop-mtp) to leave it out")
    return set(found)


def from_hf_weights(hf: Dict[str, Any], weights: Dict[str, np.ndarray], source: str, drop_mtp: bool = False
                    ) -> Tuple[TransformerConfig, Dict[str, np.ndarray]]:
    """An HF config dict and HF-named weights in memory (per-expert or transformers 5's fused
    experts) -> (config, our params), checked; ``drop_mtp``: see ``mtp_tensors``."""
    config = config_from_hf(hf)
    dropped = mtp_tensors(hf, weights, source, drop_mtp)
    weights = {name: value for name, value in weights.items() if name not in dropped}
    weights = to_layout(from_layout(weights, style(hf["model_type"])), style(hf["model_type"]))  # fused -> per-expert
    check_tensors(config, {name: value.shape for name, value in weights.items()}, source, style(hf["model_type"]))
    return config, from_layout(weights, style(hf["model_type"]))


def load_hf_checkpoint(path, drop_mtp: bool = False) -> Tuple[TransformerConfig, Dict[str, np.ndarray]]:
    """A folder with config.json + safetensors, or a .gguf file -> (config, our params).
    ``drop_mtp``: leave out a multi-token-prediction layer (GLM-4.5, DeepSeek-V3) instead of
    refusing the checkpoint (``mtp_tensors``); its tensors are never read."""
    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"{path}: no such GGUF file")
        return from_hf_weights(*load_gguf(path), str(path), drop_mtp)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json: expected an HF checkpoint folder or a .gguf file")
    hf = read_json(path / "config.json")
    check_unquantised(hf)
    config = config_from_hf(hf)
    files = tensor_files(path)
    dropped = mtp_tensors(hf, files, str(path), drop_mtp)
    files = {name: file for name, file in files.items() if name not in dropped}
    headers = {file: read_header(file) for file in set(files.values())}
    entries = {name: headers[file][0].get(name) for name, file in files.items()}
    absent = sorted(name for name, entry in entries.items() if entry is None)
    if absent:
        raise ConfigError(f"{path / INDEX} maps tensor {absent[0]} to {files[absent[0]].name}, which lacks it")
    check_tensors(config, {name: tuple(entry["shape"]) for name, entry in entries.items()}, str(path),
                  style(hf["model_type"]))
    weights = {name: read_tensor(file, entries[name], headers[file][1]) for name, file in files.items()}
    return config, from_layout(weights, style(hf["model_type"]))


def check_params(config: TransformerConfig, params: Dict[str, np.ndarray], what: str) -> None:
    """Every parameter ``config`` needs, with its shape (one line naming the first bad one)."""
    for name, spec in Transformer(config).param_specs().items():
        if name not in params:
            raise ConfigError(f"{what}: the checkpoint lacks {name}")
        if tuple(np.shape(params[name])) != spec.shape:
            raise ConfigError(f"{what}: {name} has shape {list(np.shape(params[name]))}; "
                              f"the config implies {list(spec.shape)}")


def save_hf_checkpoint(config: TransformerConfig, params: Dict[str, np.ndarray], folder) -> Path:
    """Write config.json + model.safetensors (float32) that transformers' from_pretrained
    loads; refuses (one line) a config with no equivalent among ``ARCHITECTURES``."""
    hf = config_to_hf(config)
    check_params(config, params, "save_hf_checkpoint")
    specs = Transformer(config).param_specs()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(value, dtype=np.float32)
               for name, value in to_layout({name: params[name] for name in specs}, style(hf["model_type"])).items()}
    save_file(tensors, str(folder / SINGLE), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    return folder
