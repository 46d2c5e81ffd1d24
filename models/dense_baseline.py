"""A dense baseline with the same active FFN FLOPs per token as an MoE transformer.

An MoE layer applies ``a`` experts of width f_e to each token (a = top_k for learned
top-k routers; for routers with null experts such as AdaMoE the expected number of true
experts under uniform routing, a = top_k * n / (n + m), or the measured
``mean_true_experts_per_token`` of a run). Its FFN FLOPs per token are a * 2 * m * d * f_e
(m = 3 matrices for SwiGLU, 2 for GELU), i.e. a dense FFN of width a * f_e. The baseline
is the same model with every block dense and one width f_b chosen so that the total over
all L blocks matches:

    L * 2 * m * d * f_b = sum over dense blocks 2 m d f + sum over MoE blocks a 2 m_e d f_e

With ``moe_every = 1`` (and equal FFN types) that is f_b = a * f_e exactly. Router FLOPs
(2 * d * (n + m) per token per MoE layer) are not counted: the baseline has no router.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from core.errors import ConfigError
from models.dense_ffn import ffn_matrices
from models.transformer_config import TransformerConfig


def active_experts_per_token(config: TransformerConfig) -> float:
    """Expected true experts per token before any capacity drop (see module docstring)."""
    moe = config.moe
    return moe.top_k * moe.num_experts / moe.num_slots


def ffn_flops_per_token(config: TransformerConfig, active_experts: Optional[float] = None) -> float:
    """Forward FFN FLOPs per token summed over all blocks (experts only, no router)."""
    c = config
    dense = 2 * ffn_matrices(c.ffn_type) * c.d_model * c.ffn_hidden
    moe_layers = c.moe_layer_indices
    total = dense * (c.num_layers - len(moe_layers))
    if moe_layers:
        active = active_experts_per_token(c) if active_experts is None else active_experts
        total += len(moe_layers) * active * 2 * ffn_matrices(c.moe.expert_type) * c.d_model * c.moe.ffn_hidden
    return total


def dense_baseline(config: TransformerConfig, active_experts: Optional[float] = None) -> TransformerConfig:
    """The MoE config -> a dense config (moe_every 0) whose FFN FLOPs per token equal the
    MoE model's active FFN FLOPs; the width is rounded to the nearest integer."""
    c = config.validate()
    if c.moe_every == 0:
        raise ConfigError("model.moe_every=0: the model is already dense; a dense baseline needs an MoE config")
    if active_experts is not None and not active_experts > 0:
        raise ConfigError(f"active_experts={active_experts!r}: must be > 0")
    per_width = c.num_layers * 2 * ffn_matrices(c.ffn_type) * c.d_model
    width = max(1, round(ffn_flops_per_token(c, active_experts) / per_width))
    return replace(c, moe_every=0, moe=None, ffn_hidden=width).validate()
