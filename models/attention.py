"""Grouped-query causal self-attention (Ainslie et al. 2023, arXiv 2305.13245) with rotary
positions, as in Llama/Mixtral. H query heads share Hkv key/value heads in groups of
G = H / Hkv (query head h reads kv head h // G, HF's ``repeat_kv`` order); Hkv = H is plain
multi-head attention. All heads run in one batched matmul, no loop over heads:

    A = softmax(rope(n_q(q)) rope(n_k(k))^T / sqrt(D) + causal bias) v,   out = concat_heads(A) W_o^T

n_q, n_k: the identity, or an RMSNorm of the queries and keys before rotary positions
(``qk_norm``): ``per_head`` normalises each head's D features with one weight [D] shared by
the heads (Qwen3), ``across_heads`` normalises all H*D (Hkv*D) features of the projection
with a weight of that size (OLMoE).
"""
from __future__ import annotations

from typing import Dict

from core.errors import ConfigError
from core.params import ParamSpec, constant_init, normal_init
from models.adaptable import Adaptable
from models.norms import RMSNorm
from models.rotary import apply_rope, rope_tables

MASKED = -1e9
QK_NORMS = ("none", "per_head", "across_heads")


def causal_bias(F, seq_len: int, past: int = 0, window: int = 0):
    """[S, past + S] float32 added to the scores: 0 where query m (at position past + m) may
    attend to key n (n <= past + m), -1e9 elsewhere (an added constant: its gradient is free,
    unlike a select's). ``past``: positions already held in a KV cache. ``window`` W > 0: a
    sliding window, key n only if n > past + m - W (transformers' sliding-window mask)."""
    position = F.arange(seq_len, F.index_dtype)
    key = F.arange(past + seq_len, F.index_dtype) if past else position
    query = F.expand_dims(position + past if past else position, 1)
    bias = additive_bias(F, query >= F.expand_dims(key, 0))
    return bias + additive_bias(F, F.expand_dims(key, 0) > query - window) if window else bias


def additive_bias(F, allowed):
    """bool mask -> float32 bias of its shape: 0 where allowed, -1e9 elsewhere."""
    return F.where(allowed, F.zeros((), F.float32), F.zeros((), F.float32) + MASKED)


def cache_bias(F, position, length: int, window: int = 0):
    """``causal_bias`` of one query at ``position`` (a 0-d index tensor) over a fixed-length
    cache: [1, M] float32, 0 at keys n <= position (and n > position - ``window`` if W > 0),
    -1e9 elsewhere (slots not written yet)."""
    key = F.arange(length, F.index_dtype)
    bias = additive_bias(F, F.reshape(key <= position, (1, length)))
    return bias + additive_bias(F, F.reshape(key > position - window, (1, length))) if window else bias


class Attention(Adaptable):
    """Weights stored [out, in] like HF: ``q_proj`` [H*D, d], ``k_proj``/``v_proj``
    [Hkv*D, d], ``o_proj`` [d, H*D], names under ``prefix`` (``model.layers.{i}.self_attn.``);
    bias-free (Llama) or, with ``qkv_bias``, biases ``{q,k,v}_proj.bias`` on the query, key
    and value projections (Qwen2); ``o_bias`` adds ``o_proj.bias`` on the output (gpt-oss);
    biases start at zero. ``qk_norm`` (``QK_NORMS``, module
    docstring) adds ``q_norm.weight`` and ``k_norm.weight`` with epsilon ``norm_eps``.
    ``head_dim``: D, or 0 for d_model / H (Qwen3 sets D apart from d_model / H);
    ``rotary_dim``: the R features of each head that rotate (``models.rotary``), 0 for all D.
    ``sinks``: a learned logit per query head, ``sinks`` [H] (init 0), that joins each query's
    softmax as one more key with no value (gpt-oss's attention sinks, ``attend_heads``)."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, rope_theta: float,
                 init_std: float, prefix: str, qkv_bias: bool = False, qk_norm: str = "none",
                 norm_eps: float = 1e-6, head_dim: int = 0, rotary_dim: int = 0, sinks: bool = False,
                 o_bias: bool = False) -> None:
        if (d_model % num_heads and not head_dim) or num_heads % num_kv_heads or (head_dim or d_model // num_heads) % 2:
            raise ConfigError(f"attention: d_model={d_model}, num_heads={num_heads}, num_kv_heads={num_kv_heads}, "
                              f"head_dim={head_dim} need num_heads | d_model (or a head_dim), num_kv_heads | "
                              "num_heads and an even head size")
        if qk_norm not in QK_NORMS:
            raise ConfigError(f"attention: qk_norm={qk_norm!r}; expected one of {', '.join(QK_NORMS)}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim or d_model // num_heads
        self.rotary_dim = rotary_dim or self.head_dim
        self.rope_theta = rope_theta
        self.init_std = init_std
        self.prefix = prefix
        self.biased = (("q_proj", "k_proj", "v_proj") if qkv_bias else ()) + (("o_proj",) if o_bias else ())
        self.qk_norm = qk_norm
        self.sinks = sinks
        widths = {"q": num_heads, "k": num_kv_heads} if qk_norm == "across_heads" else {"q": 1, "k": 1}
        self.norms = {} if qk_norm == "none" else {
            name: RMSNorm(widths[name] * self.head_dim, norm_eps, f"{prefix}{name}_norm.") for name in ("q", "k")}
        self.adapters = {}

    def param_specs(self) -> Dict[str, ParamSpec]:
        init = normal_init(self.init_std)
        q, kv, p = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.prefix
        specs = {p + "q_proj.weight": ParamSpec((q, self.d_model), init),
                 p + "k_proj.weight": ParamSpec((kv, self.d_model), init),
                 p + "v_proj.weight": ParamSpec((kv, self.d_model), init),
                 p + "o_proj.weight": ParamSpec((self.d_model, q), init)}
        for name in self.biased:
            specs[p + name + ".bias"] = ParamSpec((specs[p + name + ".weight"].shape[0],), constant_init(0.0))
        for norm in self.norms.values():
            specs.update(norm.param_specs())
        if self.sinks:
            specs[p + "sinks"] = ParamSpec((self.num_heads,), constant_init(0.0))
        return specs

    def project(self, F, params: dict, x, name: str):
        """``Adaptable.project`` plus the projection's bias, if it has one."""
        y = super().project(F, params, x, name)
        return y + params[self.prefix + name + ".bias"] if name in self.biased else y

    def heads(self, F, params: dict, x, name: str, heads: int):
        """x [B, S, d] -> projection ``<name>_proj`` split into heads [B, S, heads, D], with
        its q/k norm (``qk_norm``) if it has one."""
        batch, seq, _ = x.shape
        y = self.project(F, params, x, name + "_proj")
        norm = self.norms.get(name)
        if norm is not None and self.qk_norm == "across_heads":
            y = norm.forward(F, params, y)
        y = F.reshape(y, (batch, seq, heads, self.head_dim))
        return norm.forward(F, params, y) if norm is not None and self.qk_norm == "per_head" else y

    def check_inputs(self, x, positions) -> None:
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[-1] != self.d_model:
            raise ConfigError(f"attention input has shape {shape}; expected [batch, seq, d_model={self.d_model}]")
        if tuple(positions.shape) != shape[1:2]:
            raise ConfigError(f"positions have shape {tuple(positions.shape)}; expected [{shape[1]}] (one per position)")

    def forward(self, F, params: dict, x, positions):
        """x [B, S, d], positions [S] float32 -> [B, S, d] (causal in sequence order)."""
        rope = rope_tables(F, positions, self.rotary_dim, self.rope_theta)
        return self.attend(F, params, x, rope, causal_bias(F, x.shape[1]))

    def attend(self, F, params: dict, x, rope, bias):
        """x [B, S, d], rope = rope_tables(...), bias = causal_bias(...) -> [B, S, d]."""
        return self.attend_cached(F, params, x, rope, bias, None)[0]

    def attend_cached(self, F, params: dict, x, rope, bias, past):
        """``attend`` after P earlier positions: past = (k, v), each [B, P, Hkv, D] (keys
        rotated), or None (P = 0); rope for positions P..P+S-1, bias = causal_bias(F, S, P)
        -> (out [B, S, d], (k, v) of all P + S positions: the next call's ``past``)."""
        q, k, v = self.rotated_qkv(F, params, x, rope)
        if past is not None:
            k, v = F.concat([past[0], k], 1), F.concat([past[1], v], 1)
        return self.attend_keys(F, params, q, k, v, bias, x.dtype), (k, v)

    def attend_at(self, F, params: dict, x, rope, bias, cache, position):
        """``attend_cached`` for one token per row into a cache of fixed length M (shapes do
        not change with the position, so compiled code is compiled once): x [B, 1, d] at
        ``position`` p (a 0-d index tensor), cache = (k, v), each [B, M, Hkv, D] with
        positions < p filled, bias = cache_bias(F, p, M), rope for position p -> (out
        [B, 1, d], cache with position p written: k[:, p] = this token's key)."""
        q, k, v = self.rotated_qkv(F, params, x, rope)
        k, v = F.write_index(cache[0], position, k, 1), F.write_index(cache[1], position, v, 1)
        return self.attend_keys(F, params, q, k, v, bias, x.dtype), (k, v)

    def rotated_qkv(self, F, params: dict, x, rope):
        """x [B, S, d] -> q [B, S, H, D], k and v [B, S, Hkv, D] (q/k-normed if ``qk_norm``),
        q and k rotated by rope."""
        cos, sin = rope
        q = apply_rope(F, self.heads(F, params, x, "q", self.num_heads), cos, sin)
        k = apply_rope(F, self.heads(F, params, x, "k", self.num_kv_heads), cos, sin)
        return q, k, self.heads(F, params, x, "v", self.num_kv_heads)

    def attend_keys(self, F, params: dict, q, k, v, bias, dtype):
        """q [B, S, H, D] over keys and values [B, N, Hkv, D] with bias [S, N] -> out [B, S, d]
        (after o_proj), in ``dtype``."""
        sinks = params[self.prefix + "sinks"] if self.sinks else None
        return self.project(F, params, attend_heads(F, q, k, v, bias, q.shape[-1] ** -0.5, dtype, sinks), "o_proj")


def attend_heads(F, q, k, v, bias, scale: float, dtype, sinks=None):
    """Softmax attention of every head in one batched matmul: q [B, S, H, Dk] over keys
    [B, N, Hkv, Dk] and values [B, N, Hkv, Dv] (query head h reads kv head h // (H / Hkv)),
    bias [S, N] added to the float32 scores (q k^T) * scale -> [B, S, H * Dv] in ``dtype``.
    ``sinks`` [H] (or None): head h's probabilities are softmax over (scores, sink_h) without
    the sink's, p_n = exp(s_n) / (sum_m exp(s_m) + exp(sink_h)), so they may sum below 1."""
    batch, seq, heads, dim = q.shape
    kv_heads, keys, value_dim = k.shape[2], k.shape[1], v.shape[-1]
    group = heads // kv_heads
    q = F.reshape(q * scale, (batch, seq, kv_heads, group, dim))
    q = F.reshape(F.transpose(q, (0, 2, 3, 1, 4)), (batch, kv_heads, group * seq, dim))
    scores = F.matmul(q, F.transpose(k, (0, 2, 3, 1)))
    scores = F.reshape(F.cast(scores, F.float32), (batch, kv_heads, group, seq, keys)) + bias
    if sinks is None:
        probs = F.softmax(scores, -1)
    else:
        sink = F.zeros((batch, kv_heads, group, seq, 1), F.float32) + F.reshape(sinks, (1, kv_heads, group, 1, 1))
        probs = F.softmax(F.concat([scores, sink], -1), -1)[..., :keys]
    probs = F.cast(F.reshape(probs, (batch, kv_heads, group * seq, keys)), dtype)
    out = F.matmul(probs, F.transpose(v, (0, 2, 1, 3)))
    out = F.transpose(F.reshape(out, (batch, kv_heads, group, seq, value_dim)), (0, 3, 1, 2, 4))
    return F.reshape(out, (batch, seq, heads * value_dim))
