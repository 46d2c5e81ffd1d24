"""Max |logit - transformers| per HF family on one backend: a small random transformers
model of each family is saved with ``save_pretrained``, loaded with ``load_hf_checkpoint`` and
run by our transformer (float32, CPU; MindSpore in PyNative).

    python scripts/hf_logit_gap.py --backend torch
    python scripts/hf_logit_gap.py --backend mindspore --families qwen3_moe olmoe

Prints one line per family: the max absolute difference and the logits' largest magnitude.
The models: 4 blocks, d_model 64, 8 query and 4 key/value heads (DeepSeek-V3: 8 latent-attention heads, query and
key/value ranks 24 and 32), 8 experts of width 32 (top 2),
vocabulary 128 (gpt-oss: its default YaRN, sliding windows of 8 in alternate blocks, sinks, clamp at 1.0), q/k/v biases, q/k and latent norm weights and the score-correction bias drawn away
from zeros and ones, 2 x 24 tokens. Needs transformers (``source scripts/setup_env.sh hf``). Exit codes: 0, 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from core.errors import ConfigError  # noqa: E402

SIZES = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6, initializer_range=0.1,
             eos_token_id=None)
ROUTED = dict(num_experts_per_tok=2)
FAMILIES = {  # model type -> (transformers class prefix, settings beyond SIZES)
    "llama": ("Llama", {}),
    "mixtral": ("Mixtral", {**ROUTED, "num_local_experts": 8, "intermediate_size": 32}),
    "qwen2": ("Qwen2", {}),
    "qwen2_moe": ("Qwen2Moe", {**ROUTED, "num_experts": 8, "moe_intermediate_size": 32,
                               "shared_expert_intermediate_size": 48, "decoder_sparse_step": 2}),
    "qwen3": ("Qwen3", {"head_dim": 16}),
    "qwen3_moe": ("Qwen3Moe", {**ROUTED, "num_experts": 8, "moe_intermediate_size": 32, "norm_topk_prob": True,
                               "head_dim": 16, "decoder_sparse_step": 2}),
    "olmoe": ("Olmoe", {**ROUTED, "num_experts": 8, "intermediate_size": 32}),
    "glm4_moe": ("Glm4Moe", {**ROUTED, "n_routed_experts": 8, "moe_intermediate_size": 32, "n_shared_experts": 1,
                             "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
                             "use_qk_norm": True, "attention_bias": True, "head_dim": 16, "partial_rotary_factor": 0.5}),
    "deepseek_v3": ("DeepseekV3", {**ROUTED, "n_routed_experts": 8, "moe_intermediate_size": 32, "n_shared_experts": 1,
                                   "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
                                   "num_key_value_heads": 8, "q_lora_rank": 24, "kv_lora_rank": 32,
                                   "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 12}),
    "gpt_oss": ("GptOss", {**ROUTED, "num_local_experts": 8, "intermediate_size": 32, "head_dim": 16,
                           "sliding_window": 8, "swiglu_limit": 1.0}),  # YaRN, alternating windows, sinks
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("torch", "mindspore"), default="torch")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def draw_initial_constants(model, std: float):
    """Draw the values transformers initialises to constants, so that a mapping that loses
    them shows: projection biases (gpt-oss's expert biases too) and GLM's score-correction bias ~ N(0, std^2), q/k norm
    weights and DeepSeek's latent norm weights ~ U[0.5, 1.5]. In place, with torch's global generator."""
    import torch
    with torch.no_grad():
        for name, value in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith(("_proj.bias", "_proj_bias", "e_score_correction_bias")):
                value.normal_(0.0, std)
            if name.endswith(("q_norm.weight", "k_norm.weight", "a_layernorm.weight")):
                value.uniform_(0.5, 1.5)


def random_hf_model(family: str, seed: int):
    """A random transformers model of ``family`` (``draw_initial_constants`` applied)."""
    import torch
    import transformers
    prefix, settings = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, prefix + "Config")(**{**SIZES, **settings})
    model = getattr(transformers, prefix + "ForCausalLM")(config).eval()
    draw_initial_constants(model, 0.1)
    return model


def logit_gap(family: str, runtime, seed: int) -> tuple:
    """(max |ours - transformers|, max |transformers|) on 2 x 24 random tokens."""
    import numpy as np
    import torch

    from models.transformer import Transformer
    from training.generation import Decoder
    from training.hf_checkpoint import load_hf_checkpoint
    model = random_hf_model(family, seed)
    tokens = np.random.default_rng(seed).integers(0, SIZES["vocab_size"], (2, 24))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        config, params = load_hf_checkpoint(folder)
    transformer = Transformer(config)
    ours = Decoder(transformer, runtime.module(transformer, params)).step(tokens)[0]
    with torch.no_grad():
        reference = model(torch.as_tensor(tokens)).logits.numpy()
    return float(np.abs(ours - reference).max()), float(np.abs(reference).max())


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from backends.runtime import Runtime
        runtime = Runtime(args.backend, "cpu", graph_mode=False)
        for family in args.families:
            gap, scale = logit_gap(family, runtime, args.seed)
            print(f"{family:10s} {args.backend:9s} max |logit - transformers| {gap:.2e} (logits up to {scale:.2f})")
    except (ConfigError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
