"""Rotary position embedding (RoPE; Su et al. 2021, arXiv 2104.09864) in the HF Llama
"rotate half" layout: feature i is paired with feature i + R/2, and pair i rotates by
angle pos * theta^(-2i/R). Then q_m . k_n depends on m - n only. R = D rotates every feature
of a head; partial rotary (GLM-4.5: R = D / 2) rotates the first R and passes the rest."""
from __future__ import annotations

import math


def rope_tables(F, positions, rotary_dim: int, theta: float):
    """positions [S] float32 -> (cos, sin), each [S, 1, R / 2] float32, R = ``rotary_dim``
    (the middle axis broadcasts over heads)."""
    half = rotary_dim // 2
    inv_freq = F.exp(F.arange(half, F.float32) * (-2.0 * math.log(theta) / rotary_dim))
    angles = F.expand_dims(F.expand_dims(positions, -1) * F.expand_dims(inv_freq, 0), 1)
    return F.cos(angles), F.sin(angles)


def apply_rope(F, x, cos, sin):
    """x [B, S, H, D] -> rotated [B, S, H, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    x1 = x[..., :R/2], x2 = x[..., R/2:R] with R / 2 = cos.shape[-1]; features R.. pass
    unchanged; computed in float32, returned in x's dtype."""
    half = cos.shape[-1]
    xf = F.cast(x, F.float32)
    x1 = xf[..., :half]
    x2 = xf[..., half:2 * half]
    parts = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    if 2 * half < x.shape[-1]:
        parts.append(xf[..., 2 * half:])
    return F.cast(F.concat(parts, -1), x.dtype)
