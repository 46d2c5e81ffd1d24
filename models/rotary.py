"""Rotary position embedding (RoPE; Su et al. 2021, arXiv 2104.09864) in the HF Llama
"rotate half" layout: feature i is paired with feature i + D/2, and pair i rotates by
angle pos * theta^(-2i/D). Then q_m . k_n depends on m - n only."""
from __future__ import annotations

import math


def rope_tables(F, positions, head_dim: int, theta: float):
    """positions [S] float32 -> (cos, sin), each [S, 1, head_dim] float32 (the middle axis
    broadcasts over heads): cos of the angles pos * theta^(-2i/D) for both halves, and their
    sin with the first half negated, so that ``apply_rope`` is two products and a sum."""
    half = head_dim // 2
    inv_freq = F.exp(F.arange(half, F.float32) * (-2.0 * math.log(theta) / head_dim))
    angles = F.expand_dims(F.expand_dims(positions, -1) * F.expand_dims(inv_freq, 0), 1)
    cos, sin = F.cos(angles), F.sin(angles)
    return F.concat([cos, cos], -1), F.concat([sin * -1.0, sin], -1)


def apply_rope(F, x, cos, sin):
    """x [B, S, H, D] -> rotated [B, S, H, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    x1 = x[..., :D/2], x2 = x[..., D/2:], computed as x cos + (x2, x1) sin with the tables of
    ``rope_tables`` (the same floating-point operations: a + b(-s) rounds as a - bs); in
    float32, returned in x's dtype."""
    half = x.shape[-1] // 2
    xf = F.cast(x, F.float32)
    return F.cast(xf * cos + F.concat([xf[..., half:], xf[..., :half]], -1) * sin, x.dtype)
