"""The settings of the decoder-only transformer, validated up front with one-line errors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from core.errors import ConfigError
from models.moe_config import EXPERT_TYPES, MoEConfig

FFN_TYPES = EXPERT_TYPES


@dataclass
class TransformerConfig:
    """A Llama/Mixtral-style decoder. ``ffn_hidden``/``ffn_type`` size the dense FFN blocks;
    every ``moe_every``-th block (blocks moe_every-1, 2*moe_every-1, ...) uses an MoE FFN
    described by ``moe`` instead; ``moe_every = 0`` makes every block dense. ``qkv_bias``:
    biases on the attention's query, key and value projections (Qwen2), none on its output."""

    vocab_size: int = 32000
    d_model: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8
    ffn_hidden: int = 1376
    ffn_type: str = "swiglu"
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False
    init_std: float = 0.02
    moe_every: int = 1
    moe: Optional[MoEConfig] = None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def is_moe_layer(self, index: int) -> bool:
        return self.moe_every > 0 and (index + 1) % self.moe_every == 0

    @property
    def moe_layer_indices(self) -> List[int]:
        return [i for i in range(self.num_layers) if self.is_moe_layer(i)]

    def validate(self, section: str = "model") -> "TransformerConfig":
        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{section}.{key}={getattr(self, key)!r}: {rule}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for key in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "ffn_hidden", "max_seq_len"):
            need(is_int(getattr(self, key)) and getattr(self, key) >= 1, key, "must be a positive integer")
        need(self.d_model % self.num_heads == 0, "d_model", f"must be divisible by num_heads={self.num_heads}")
        need(self.head_dim % 2 == 0, "d_model",
             f"d_model / num_heads = {self.head_dim} must be even (rotary positions rotate pairs)")
        need(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
             f"must divide num_heads={self.num_heads} (grouped-query attention)")
        need(self.ffn_type in FFN_TYPES, "ffn_type", f"valid values are {', '.join(FFN_TYPES)}")
        for key in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, key,
                 "must be a number > 0")
        for key in ("tie_embeddings", "qkv_bias"):
            need(isinstance(getattr(self, key), bool), key, "must be true or false")
        need(is_int(self.moe_every) and 0 <= self.moe_every <= self.num_layers, "moe_every",
             f"must be an integer from 0 (dense) to num_layers={self.num_layers}")
        if self.moe_every > 0:
            need(isinstance(self.moe, MoEConfig), "moe", "moe_every > 0 needs an MoE section")
            self.moe.validate()
            if self.moe.d_model != self.d_model:
                raise ConfigError(f"moe.d_model={self.moe.d_model} must equal {section}.d_model={self.d_model}")
            table_vocab = self.moe.router_options.get("vocab_size")  # token-table routers (hash, rre)
            if isinstance(table_vocab, int) and table_vocab < self.vocab_size:
                raise ConfigError(f"moe.router_options.vocab_size={table_vocab} is smaller than "
                                  f"{section}.vocab_size={self.vocab_size}: every token id needs a table entry")
        return self
