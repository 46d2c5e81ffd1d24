"""The settings of the decoder-only transformer, each declared with its rule (``core.rules``),
validated up front with one-line errors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from core.errors import ConfigError
from core.rules import FLAG, check_fields, integer, names, number, one_of, setting
from models.attention import QK_NORMS
from models.moe_config import EXPERT_TYPES, MoEConfig
from models.rotary import Yarn, yarn_mscale

FFN_TYPES = EXPERT_TYPES
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class TransformerConfig:
    """A Llama/Mixtral-style decoder. ``ffn_hidden``/``ffn_type`` size the dense FFN blocks;
    every ``moe_every``-th block (blocks moe_every-1, 2*moe_every-1, ...) uses an MoE FFN
    described by ``moe`` instead; ``moe_every = 0`` makes every block dense. ``qkv_bias``:
    biases on the attention's query, key and value projections (Qwen2); ``o_bias``: a bias
    on its output projection ``o_proj.bias`` (gpt-oss has both).
    ``qk_norm``: RMSNorm of queries and keys before rotary positions, ``per_head`` (Qwen3) or
    ``across_heads`` (OLMoE) (``models.attention``); ``norm_eps`` is its epsilon too.
    ``head_size``: each head's width D when it is not d_model / num_heads (Qwen3-30B-A3B: 128
    with d_model 2048 and 32 heads); 0 takes d_model / num_heads. ``partial_rotary_factor``: the
    share of each head's features that rotate (GLM-4.5: 0.5; the first ones, ``models.rotary``).
    ``first_dense_layers``: blocks 0..k-1 are dense whatever ``moe_every`` says (DeepSeek-V3
    and GLM-4.5's ``first_k_dense_replace``).

    ``kv_lora_rank`` > 0 replaces grouped-query attention by DeepSeek's multi-head latent
    attention (``models.latent_attention``): keys and values come from a normed latent of
    ``kv_lora_rank`` features per position (what the KV cache stores), queries from one of
    ``q_lora_rank`` features (0: a full-rank q projection); each head has ``qk_nope_head_dim``
    features without positions and ``qk_rope_head_dim`` rotary ones (its rotary key shared by
    the heads), and ``v_head_dim`` value features; ``rope_interleave``: DeepSeek's pairing of
    rotary features (2i, 2i + 1) instead of (i, i + R/2).

    ``yarn_factor`` s > 1 turns on YaRN rope scaling (``models.rotary.Yarn``) for a model
    trained on ``yarn_original_max_seq_len`` positions, with ``yarn_beta_fast``,
    ``yarn_beta_slow``, ``yarn_truncate`` as in transformers; cos and sin are scaled by
    ``yarn_attention_factor`` (0: 0.1 ln(s) + 1); ``yarn_mscale_all_dim`` m > 0 (DeepSeek-V3)
    also multiplies latent attention's softmax scale by (0.1 m ln(s) + 1)^2.

    ``layer_types``: one of ``LAYER_TYPES`` per block (empty: all full); a
    ``sliding_attention`` block's queries see the last ``sliding_window`` positions only
    (Qwen2, Qwen3, gpt-oss). ``attention_sinks``: a learned logit per query head in every
    softmax (gpt-oss; ``models.attention.attend_heads``)."""

    vocab_size: int = setting(32000, integer(1))
    d_model: int = setting(512, integer(1))
    num_layers: int = setting(8, integer(1))
    num_heads: int = setting(8, integer(1))
    num_kv_heads: int = setting(8, integer(1))
    head_size: int = setting(0, integer(0))
    partial_rotary_factor: float = setting(1.0, number(0.0, high=1.0, low_open=True))
    ffn_hidden: int = setting(1376, integer(1))
    ffn_type: str = setting("swiglu", one_of(*FFN_TYPES))
    max_seq_len: int = setting(2048, integer(1))
    rope_theta: float = setting(10000.0, number(0.0, low_open=True))
    norm_eps: float = setting(1e-5, number(0.0, low_open=True))
    tie_embeddings: bool = setting(False, FLAG)
    qkv_bias: bool = setting(False, FLAG)
    o_bias: bool = setting(False, FLAG)
    qk_norm: str = setting("none", one_of(*QK_NORMS))
    init_std: float = setting(0.02, number(0.0, low_open=True))
    moe_every: int = setting(1, integer(0))  # at most num_layers (validate)
    first_dense_layers: int = setting(0, integer(0))
    kv_lora_rank: int = setting(0, integer(0))
    q_lora_rank: int = setting(0, integer(0))
    qk_nope_head_dim: int = setting(0, integer(0))
    qk_rope_head_dim: int = setting(0, integer(0))
    v_head_dim: int = setting(0, integer(0))
    rope_interleave: bool = setting(False, FLAG)
    yarn_factor: float = setting(1.0, number(1.0))
    yarn_original_max_seq_len: int = setting(0, integer(0))
    yarn_beta_fast: float = setting(32.0, number(0.0, low_open=True))
    yarn_beta_slow: float = setting(1.0, number(0.0, low_open=True))
    yarn_attention_factor: float = setting(0.0, number(0.0))
    yarn_mscale_all_dim: float = setting(0.0, number(0.0))
    yarn_truncate: bool = setting(True, FLAG)
    sliding_window: int = setting(0, integer(0))
    layer_types: List[str] = setting([], names(*LAYER_TYPES))
    attention_sinks: bool = setting(False, FLAG)
    moe: Optional[MoEConfig] = None

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.num_heads

    @property
    def yarn(self) -> Optional[Yarn]:
        """The YaRN scaling of the rotary positions, or None (``yarn_factor`` 1)."""
        if self.yarn_factor == 1.0:
            return None
        return Yarn(self.yarn_factor, self.yarn_original_max_seq_len, self.yarn_beta_fast, self.yarn_beta_slow,
                    self.yarn_attention_factor or yarn_mscale(self.yarn_factor), self.yarn_truncate)

    @property
    def rotary_dim(self) -> int:
        """The R features of each head that rotate: head_dim * partial_rotary_factor, or
        qk_rope_head_dim with latent attention."""
        return self.qk_rope_head_dim if self.kv_lora_rank else int(self.head_dim * self.partial_rotary_factor)

    def window(self, index: int) -> int:
        """Block ``index``'s sliding window W, 0 for full attention."""
        return self.sliding_window if self.layer_types and self.layer_types[index] == "sliding_attention" else 0

    def is_moe_layer(self, index: int) -> bool:
        return self.moe_every > 0 and index >= self.first_dense_layers and (index + 1) % self.moe_every == 0

    @property
    def moe_layer_indices(self) -> List[int]:
        return [i for i in range(self.num_layers) if self.is_moe_layer(i)]

    def validate(self, section: str = "model") -> "TransformerConfig":
        """Every field against its declared rule, then the checks that span fields; one-line
        ConfigErrors named ``<section>.<key>``."""
        check_fields(self, section)

        s = section
        if self.kv_lora_rank:
            self.check_latent_attention(s)
        else:
            self.check_attention(s)
        if self.yarn_factor != 1.0 and self.yarn_original_max_seq_len < 1:
            raise ConfigError(f"{s}.yarn_original_max_seq_len={self.yarn_original_max_seq_len}: YaRN "
                              f"({s}.yarn_factor={self.yarn_factor}) needs the positions the model was trained on")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ConfigError(f"{s}.layer_types has {len(self.layer_types)} entries; {s}.num_layers={self.num_layers} "
                              "needs one per block (or none: all full_attention)")
        if "sliding_attention" in self.layer_types and self.sliding_window < 1:
            raise ConfigError(f"{s}.sliding_window={self.sliding_window}: {s}.layer_types has sliding_attention "
                              "blocks, which need a window >= 1")
        if self.yarn_mscale_all_dim and not (self.kv_lora_rank and self.yarn):
            raise ConfigError(f"{s}.yarn_mscale_all_dim={self.yarn_mscale_all_dim}: scales latent attention's "
                              f"softmax under YaRN; needs {s}.kv_lora_rank > 0 and {s}.yarn_factor > 1")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"{s}.num_heads={self.num_heads} must be divisible by {s}.num_kv_heads="
                              f"{self.num_kv_heads} (grouped-query attention)")
        if self.moe_every > self.num_layers:
            raise ConfigError(f"{s}.moe_every={self.moe_every} exceeds {s}.num_layers={self.num_layers}: "
                              f"no layer would be MoE (use 0 for a dense model)")
        if self.moe_every > 0:
            if not self.moe_layer_indices:
                raise ConfigError(f"{s}.first_dense_layers={self.first_dense_layers} leaves no MoE block of "
                                  f"{s}.num_layers={self.num_layers} (use moe_every 0 for a dense model)")
            if not isinstance(self.moe, MoEConfig):
                raise ConfigError(f"{s}.moe={self.moe!r}: moe_every > 0 needs an MoE section")
            self.moe.validate()
            if self.moe.d_model != self.d_model:
                raise ConfigError(f"moe.d_model={self.moe.d_model} must equal {section}.d_model={self.d_model}")
            table_vocab = self.moe.router_options.get("vocab_size")  # token-table routers (hash, rre)
            if isinstance(table_vocab, int) and table_vocab < self.vocab_size:
                raise ConfigError(f"moe.router_options.vocab_size={table_vocab} is smaller than "
                                  f"{section}.vocab_size={self.vocab_size}: every token id needs a table entry")
        return self

    def check_attention(self, s: str) -> None:
        """The head and rotary widths of grouped-query attention."""
        if self.d_model % self.num_heads and not self.head_size:
            raise ConfigError(f"{s}.d_model={self.d_model} must be divisible by {s}.num_heads={self.num_heads}")
        if self.head_dim % 2:
            width = f"{s}.head_size={self.head_size}" if self.head_size else f"{s}.d_model / {s}.num_heads = {self.head_dim}"
            raise ConfigError(f"{width} must be even (rotary positions rotate pairs of channels)")
        if self.rope_interleave or self.q_lora_rank:
            key = "rope_interleave" if self.rope_interleave else "q_lora_rank"
            raise ConfigError(f"{s}.{key}={getattr(self, key)!r} belongs to multi-head latent attention: "
                              f"set {s}.kv_lora_rank > 0 or leave it out")
        if self.rotary_dim < 2 or self.rotary_dim % 2:
            raise ConfigError(f"{s}.partial_rotary_factor={self.partial_rotary_factor} rotates {self.rotary_dim} of "
                              f"{self.head_dim} features per head: must be an even number from 2")

    def check_latent_attention(self, s: str) -> None:
        """The settings that multi-head latent attention needs, and those it has no use for."""
        if self.qk_rope_head_dim < 2 or self.qk_rope_head_dim % 2:
            raise ConfigError(f"{s}.qk_rope_head_dim={self.qk_rope_head_dim}: latent attention ({s}.kv_lora_rank > 0) "
                              "needs an even number of rotary features from 2")
        for key in ("qk_nope_head_dim", "v_head_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{s}.{key}=0: latent attention ({s}.kv_lora_rank > 0) needs it >= 1")
        for key, plain in (("qk_norm", "none"), ("qkv_bias", False), ("o_bias", False), ("partial_rotary_factor", 1.0), ("head_size", 0),
                           ("num_kv_heads", self.num_heads)):
            if getattr(self, key) != plain:
                raise ConfigError(f"{s}.{key}={getattr(self, key)!r} does not apply to latent attention "
                                  f"({s}.kv_lora_rank > 0): leave it at {plain!r}")
