"""Rotary position embedding (RoPE; Su et al. 2021, arXiv 2104.09864) in the HF Llama
"rotate half" layout: feature i is paired with feature i + R/2, and pair i rotates by
angle pos * theta^(-2i/R). Then q_m . k_n depends on m - n only. R = D rotates every feature
of a head; partial rotary (GLM-4.5: R = D / 2) rotates the first R and passes the rest.
DeepSeek's interleaved layout (``interleave``) pairs feature 2i with 2i + 1 instead: its
features are first reordered evens-then-odds, then rotated as above (transformers'
``apply_rotary_pos_emb_interleave`` returns them in that order too)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Yarn:
    """YaRN rope scaling (Peng et al. 2023, arXiv 2309.00071) as transformers computes it:
    pair i's frequency f_i = theta^(-2i/R) becomes f_i r_i / s + f_i (1 - r_i), with
    r_i = clip((i - low) / (high - low), 0, 1) (0: kept, 1: divided by the factor s), low
    and high the pairs that turn ``beta_fast`` and ``beta_slow`` times over
    ``original_max_positions`` (rounded outwards when ``truncate``); cos and sin are scaled
    by ``attention_factor``."""

    factor: float
    original_max_positions: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float = 1.0
    truncate: bool = True

    def constants(self, rotary_dim: int, theta: float) -> Tuple[float, float, float, float]:
        """(s, low, high, attention_factor): the host values ``rope_tables`` takes (compiled
        code bakes them in)."""
        def pair(rotations: float) -> float:
            return rotary_dim * math.log(self.original_max_positions / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        low, high = pair(self.beta_fast), pair(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, rotary_dim - 1)
        return float(self.factor), float(low), float(high + 0.001 if low == high else high), float(self.attention_factor)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 mscale ln(s) + 1 for s > 1, else 1."""
    return 0.1 * mscale * math.log(factor) + 1.0 if factor > 1 else 1.0


def rope_tables(F, positions, rotary_dim: int, theta: float, yarn: Optional[tuple] = None):
    """positions [S] float32 -> (cos, sin), each [S, 1, R] float32, R = ``rotary_dim`` (the
    middle axis broadcasts over heads): cos of the angles pos * theta^(-2i/R) for both halves,
    and their sin with the first half negated, so that ``apply_rope`` is two products and a sum;
    ``yarn``: ``Yarn.constants`` for its frequencies and scale, or None."""
    half = rotary_dim // 2
    inv_freq = F.exp(F.arange(half, F.float32) * (-2.0 * math.log(theta) / rotary_dim))
    if yarn is not None:
        scaled = F.clip((F.arange(half, F.float32) - yarn[1]) * (1.0 / (yarn[2] - yarn[1])), 0.0, 1.0)
        inv_freq = inv_freq * (1.0 / yarn[0]) * scaled + inv_freq * (1.0 - scaled)
    angles = F.expand_dims(F.expand_dims(positions, -1) * F.expand_dims(inv_freq, 0), 1)
    cos, sin = F.cos(angles), F.sin(angles)
    if yarn is not None and yarn[3] != 1.0:
        cos, sin = cos * yarn[3], sin * yarn[3]
    return F.concat([cos, cos], -1), F.concat([sin * -1.0, sin], -1)


def apply_rope(F, x, cos, sin, interleave: bool = False):
    """x [B, S, H, D] -> rotated [B, S, H, D]: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    x1 = x[..., :R/2], x2 = x[..., R/2:R] with R = cos.shape[-1], computed as x cos + (x2, x1) sin
    with the tables of ``rope_tables`` (the same floating-point operations: a + b(-s) rounds as
    a - bs); features R.. pass unchanged (partial rotary); in float32, returned in x's dtype.
    ``interleave``: pairs (x[2i], x[2i+1]), the rotated features laid out as (evens, odds)."""
    rotary, half = cos.shape[-1], cos.shape[-1] // 2
    xf = F.cast(x, F.float32)
    partial = rotary < x.shape[-1]
    xr = xf[..., :rotary] if partial else xf
    if interleave:
        pairs = F.reshape(xr, tuple(xr.shape[:-1]) + (half, 2))
        xr = F.concat([pairs[..., 0], pairs[..., 1]], -1)
    rotated = xr * cos + F.concat([xr[..., half:], xr[..., :half]], -1) * sin
    if partial:
        rotated = F.concat([rotated, xf[..., rotary:]], -1)
    return F.cast(rotated, x.dtype)
