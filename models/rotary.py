"""Rotary position embedding (RoPE; Su et al. 2021, arXiv 2104.09864) in the HF Llama
"rotate half" layout: feature i is paired with feature i + D/2, and pair i rotates by
angle pos * theta^(-2i/D). Then q_m . k_n depends on m - n only."""
from __future__ import annotations

import math


def rope_tables(F, positions, head_dim: int, theta: float):
    """positions [S] float32 -> (cos, sin), each [S, 1, head_dim / 2] float32 (the middle
    axis broadcasts over heads)."""
    half = head_dim // 2
    inv_freq = F.exp(F.arange(half, F.float32) * (-2.0 * math.log(theta) / head_dim))
    angles = F.expand_dims(F.expand_dims(positions, -1) * F.expand_dims(inv_freq, 0), 1)
    return F.cos(angles), F.sin(angles)


def apply_rope(F, x, cos, sin):
    """x [B, S, H, D] -> rotated [B, S, H, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    x1 = x[..., :D/2], x2 = x[..., D/2:]; computed in float32, returned in x's dtype."""
    half = x.shape[-1] // 2
    xf = F.cast(x, F.float32)
    x1 = xf[..., :half]
    x2 = xf[..., half:]
    return F.cast(F.concat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1), x.dtype)
