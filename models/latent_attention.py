"""Multi-head latent attention (MLA; DeepSeek-V2, arXiv 2405.04434, and DeepSeek-V3). Keys
and values of H heads come from one compressed latent per position, which is all a KV cache
keeps; each head's query and key have Dn features without positions and Dr rotary ones, the
rotary key shared by the heads:

    c_q = n_q(x W_qa^T) [Rq]           q = c_q W_qb^T = (q_nope [H, Dn], q_rope [H, Dr])
    (c_kv [C], k_r [Dr]) = x W_kva^T   c = n_kv(c_kv)           (cached: c and rope(k_r))
    (k_nope [H, Dn], v [H, Dv]) = c W_kvb^T
    A = softmax((q_nope k_nope^T + rope(q_rope) rope(k_r)^T) / sqrt(Dn + Dr) + causal bias) v
    out = concat_heads(A) W_o^T

Without a query rank (``q_lora_rank`` 0, DeepSeek-V2-Lite) q = x W_q^T. n_q, n_kv: RMSNorms
of the latents with epsilon 1e-6 (DeepSeek's, whatever the model's norm_eps). With YaRN's
``yarn_mscale_all_dim`` m the scale 1 / sqrt(Dn + Dr) is multiplied by (0.1 m ln(s) + 1)^2. Keys and
values are expanded from the cached latents at every step, as transformers does.
"""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, normal_init
from models.adaptable import Adaptable
from models.attention import attend_heads
from models.norms import RMSNorm
from models.rotary import apply_rope, yarn_mscale
from models.transformer_config import TransformerConfig

LATENT_NORM_EPS = 1e-6


class LatentAttention(Adaptable):
    """Weights stored [out, in] under HF DeepSeek-V3's names (``prefix`` =
    ``model.layers.{i}.self_attn.``): ``q_a_proj`` [Rq, d], ``q_a_layernorm`` [Rq], ``q_b_proj``
    [H*(Dn+Dr), d] (or ``q_proj`` [H*(Dn+Dr), d] without a query rank),
    ``kv_a_proj_with_mqa`` [C+Dr, d], ``kv_a_layernorm`` [C], ``kv_b_proj`` [H*(Dn+Dv), C],
    ``o_proj`` [d, H*Dv]. The interface is ``models.attention.Attention``'s; its cache per
    block is (c [B, N, C], rotated k_r [B, N, Dr]) instead of (k, v)."""

    def __init__(self, config: TransformerConfig, prefix: str) -> None:
        c = config
        self.d_model, self.num_heads, self.init_std, self.prefix = c.d_model, c.num_heads, c.init_std, prefix
        self.q_rank, self.kv_rank = c.q_lora_rank, c.kv_lora_rank
        self.nope, self.rope, self.value = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        self.interleave = c.rope_interleave
        temperature = yarn_mscale(c.yarn_factor, c.yarn_mscale_all_dim) if c.yarn_mscale_all_dim else 1.0
        self.scale = (self.nope + self.rope) ** -0.5 * temperature ** 2
        self.q_norm = RMSNorm(self.q_rank, LATENT_NORM_EPS, prefix + "q_a_layernorm.") if self.q_rank else None
        self.kv_norm = RMSNorm(self.kv_rank, LATENT_NORM_EPS, prefix + "kv_a_layernorm.")
        self.adapters = {}

    def param_specs(self) -> Dict[str, ParamSpec]:
        init, p, d, heads = normal_init(self.init_std), self.prefix, self.d_model, self.num_heads
        q = heads * (self.nope + self.rope)
        specs = ({p + "q_a_proj.weight": ParamSpec((self.q_rank, d), init), **self.q_norm.param_specs(),
                  p + "q_b_proj.weight": ParamSpec((q, self.q_rank), init)} if self.q_rank else
                 {p + "q_proj.weight": ParamSpec((q, d), init)})
        return {**specs, p + "kv_a_proj_with_mqa.weight": ParamSpec((self.kv_rank + self.rope, d), init),
                **self.kv_norm.param_specs(),
                p + "kv_b_proj.weight": ParamSpec((heads * (self.nope + self.value), self.kv_rank), init),
                p + "o_proj.weight": ParamSpec((d, heads * self.value), init)}

    def attend(self, F, params: dict, x, rope, bias):
        """x [B, S, d], rope = rope_tables(...) of Dr features, bias = causal_bias(...) -> [B, S, d]."""
        return self.attend_cached(F, params, x, rope, bias, None)[0]

    def attend_cached(self, F, params: dict, x, rope, bias, past):
        """``attend`` after P earlier positions: past = (c [B, P, C], k_r [B, P, Dr]) or None
        -> (out [B, S, d], the latents of all P + S positions: the next call's ``past``)."""
        q, latent, key_rope = self.queries_and_latents(F, params, x, rope)
        if past is not None:
            latent, key_rope = F.concat([past[0], latent], 1), F.concat([past[1], key_rope], 1)
        return self.attend_latents(F, params, q, latent, key_rope, bias, x.dtype), (latent, key_rope)

    def attend_at(self, F, params: dict, x, rope, bias, cache, position):
        """One token per row into latent caches of fixed length M (``Attention.attend_at``):
        cache = (c [B, M, C], k_r [B, M, Dr]) -> (out [B, 1, d], cache with ``position`` written)."""
        q, latent, key_rope = self.queries_and_latents(F, params, x, rope)
        latent = F.write_index(cache[0], position, latent, 1)
        key_rope = F.write_index(cache[1], position, key_rope, 1)
        return self.attend_latents(F, params, q, latent, key_rope, bias, x.dtype), (latent, key_rope)

    def queries_and_latents(self, F, params: dict, x, rope):
        """x [B, S, d] -> (q [B, S, H, Dn+Dr] with its rotary part rotated, normed latent
        c [B, S, C], rotated shared key k_r [B, S, Dr])."""
        cos, sin = rope
        batch, seq, _ = x.shape
        if self.q_rank:
            q = self.project(F, params, self.q_norm.forward(F, params, self.project(F, params, x, "q_a_proj")),
                             "q_b_proj")
        else:
            q = self.project(F, params, x, "q_proj")
        q = F.reshape(q, (batch, seq, self.num_heads, self.nope + self.rope))
        q = F.concat([q[..., :self.nope], apply_rope(F, q[..., self.nope:], cos, sin, self.interleave)], -1)
        compressed = self.project(F, params, x, "kv_a_proj_with_mqa")
        latent = self.kv_norm.forward(F, params, compressed[..., :self.kv_rank])
        key_rope = F.reshape(compressed[..., self.kv_rank:], (batch, seq, 1, self.rope))
        key_rope = apply_rope(F, key_rope, cos, sin, self.interleave)
        return q, latent, F.reshape(key_rope, (batch, seq, self.rope))

    def attend_latents(self, F, params: dict, q, latent, key_rope, bias, dtype):
        """q [B, S, H, Dn+Dr] over the keys and values expanded from N latents (c [B, N, C],
        k_r [B, N, Dr]) with bias [S, N] -> out [B, S, d] (after o_proj), in ``dtype``."""
        batch, keys = latent.shape[0], latent.shape[1]
        kv = F.reshape(self.project(F, params, latent, "kv_b_proj"), (batch, keys, self.num_heads, self.nope + self.value))
        shared = F.reshape(key_rope, (batch, keys, 1, self.rope)) * F.ones((1, 1, self.num_heads, 1), key_rope.dtype)
        k = F.concat([kv[..., :self.nope], shared], -1)
        return self.project(F, params, attend_heads(F, q, k, kv[..., self.nope:], bias, self.scale, dtype), "o_proj")
