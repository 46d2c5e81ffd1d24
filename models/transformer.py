"""A decoder-only transformer in the style of Llama and Mixtral, written once on the op
vocabulary ``F``:

    h = embed(tokens)
    for each block i:  h = h + attn(norm(h));  h = h + ffn_i(norm(h))
    logits = norm(h) W_lm^T

where ffn_i is a dense FFN, or an MoE layer (any registered router) in every
``moe_every``-th block. Parameters use HF Llama/Mixtral names and HF's [out, in] layout for
linear weights (see models/hf_names.py for the stacked-expert and router mapping).
"""
from __future__ import annotations

from typing import Dict, List

from core.errors import ConfigError
from core.params import ParamSpec, normal_init
from models.attention import Attention, cache_bias, causal_bias
from models.dense_ffn import DenseFFN
from models.latent_attention import LatentAttention
from models.moe_layer import MoELayer
from models.routers.context import RoutingContext, routing_context
from models.norms import RMSNorm
from models.rotary import rope_tables
from models.transformer_config import TransformerConfig

SUMMED = ("loss", "expert_flops", "a2a_sent_rows", "a2a_needed_rows", "a2a_cross_node_rows")  # over MoE layers


class Block:
    """Pre-norm block ``model.layers.{i}.``: attention (grouped-query, or multi-head latent
    with ``kv_lora_rank``; over a sliding window of ``window`` positions if > 0), then a dense FFN (``mlp.``) or an MoE layer (``block_sparse_moe.``)."""

    def __init__(self, config: TransformerConfig, index: int, parallel=None) -> None:
        c, p = config, f"model.layers.{index}."
        self.input_norm = RMSNorm(c.d_model, c.norm_eps, p + "input_layernorm.")
        self.attention = LatentAttention(c, p + "self_attn.") if c.kv_lora_rank else Attention(
            c.d_model, c.num_heads, c.num_kv_heads, c.rope_theta, c.init_std, p + "self_attn.", c.qkv_bias, c.qk_norm,
            c.norm_eps, c.head_size, c.rotary_dim, c.attention_sinks, c.o_bias)
        self.ffn_norm = RMSNorm(c.d_model, c.norm_eps, p + "post_attention_layernorm.")
        self.is_moe = c.is_moe_layer(index)
        self.window = c.window(index)
        if self.is_moe:
            self.ffn = MoELayer(c.moe, p + "block_sparse_moe.", index, parallel)
        else:
            self.ffn = DenseFFN(c.d_model, c.ffn_hidden, c.ffn_type, c.init_std, p + "mlp.")

    def param_specs(self) -> Dict[str, ParamSpec]:
        return {**self.input_norm.param_specs(), **self.attention.param_specs(),
                **self.ffn_norm.param_specs(), **self.ffn.param_specs()}

    def forward(self, F, params: dict, h, rope, bias, context: RoutingContext, past=None, position=None):
        """h [B, S, d], the batch's routing side inputs (read by an MoE block) -> (h [B, S, d],
        MoE aux dict or None, this block's KV cache: see ``Attention.attend_cached``, or with
        ``position`` the fixed-length cache ``past`` written there: ``Attention.attend_at``)."""
        normed = self.input_norm.forward(F, params, h)
        if position is None:
            attended, kv = self.attention.attend_cached(F, params, normed, rope, bias, past)
        else:
            attended, kv = self.attention.attend_at(F, params, normed, rope, bias, past, position)
        h = h + attended
        normed = self.ffn_norm.forward(F, params, h)
        if self.is_moe:
            y, aux = self.ffn.apply(F, params, normed, context)
            return h + y, aux, kv
        return h + self.ffn.forward(F, params, normed), None, kv


class Transformer:
    """forward(F, params, tokens [B, S] int, domain_ids [B, S] int or None, routing_noise
    [L_moe, B, S, W] or None) -> (logits [B, S, V] in the model dtype, aux).

    aux (empty of MoE keys for a dense model, but always with ``loss``):
    - ``loss``: sum over MoE layers of their weighted router losses (add to the LM loss);
    - ``<name>_loss`` (e.g. ``balance_loss``, ``z_loss``): unweighted, mean over MoE layers;
    - ``tokens_per_expert`` [L_moe, E]; ``dropped_fraction`` and
      ``mean_true_experts_per_token``: means over MoE layers; ``expert_flops``: total;
    - router ``stats`` (e.g. ``own_node_share``): means over MoE layers;
    - ``routing_log_prob`` [B * S] (stochastic routers: skip, balanced): sum over MoE
      layers, for the score term that ``models.lm_objective`` adds;
    - ``layers.<key>``: every other MoE layer aux key stacked over MoE layers [L_moe, ...]
      (``layer_aux`` picks one layer's dict, e.g. for ``router.after_step``).
    """

    def __init__(self, config: TransformerConfig, parallel=None) -> None:
        """``parallel``: the ``core.layout.ExpertParallel`` of a multi-process run (the MoE
        layers' experts are split over its ranks), None in one process."""
        self.config = config.validate()
        self.blocks = [Block(config, i, parallel) for i in range(config.num_layers)]
        self.final_norm = RMSNorm(config.d_model, config.norm_eps, "model.norm.")
        self.moe_layers: List[MoELayer] = [b.ffn for b in self.blocks if b.is_moe]
        self.yarn = config.yarn.constants(config.rotary_dim, config.rope_theta) if config.yarn else None

    def param_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        init = normal_init(c.init_std)
        specs = {"model.embed_tokens.weight": ParamSpec((c.vocab_size, c.d_model), init)}
        for block in self.blocks:
            specs.update(block.param_specs())
        specs.update(self.final_norm.param_specs())
        if not c.tie_embeddings:
            specs["lm_head.weight"] = ParamSpec((c.vocab_size, c.d_model), init)
        return specs

    @property
    def exchanges_compile(self) -> bool:
        """Whether every MoE layer's all-to-alls can run inside a compiled step."""
        return all(layer.exchanges_compile for layer in self.moe_layers)

    def static_key(self) -> tuple:
        """Every MoE layer's ``static_key``: host-side values that compiled code bakes in."""
        return tuple(layer.static_key() for layer in self.moe_layers)

    def check_inputs(self, tokens, domain_ids=None, routing_noise=None) -> None:
        """Host-side checks before any (compiled) compute: shapes, token range (reads the
        token values: one host sync), and the side inputs the routers need."""
        c = self.config
        shape = tuple(tokens.shape)
        if len(shape) != 2:
            raise ConfigError(f"tokens have shape {shape}; expected [batch, seq]")
        if shape[1] > c.max_seq_len:
            raise ConfigError(f"sequence length {shape[1]} exceeds model.max_seq_len={c.max_seq_len}")
        if "int" not in str(tokens.dtype).lower():
            raise ConfigError(f"tokens have dtype {tokens.dtype}; expected integer token ids")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= c.vocab_size:
            raise ConfigError(f"token ids span [{low}, {high}]; model.vocab_size={c.vocab_size} allows 0 to {c.vocab_size - 1}")
        if not self.moe_layers:
            if routing_noise is not None:
                raise ConfigError("routing_noise given to a dense model (model.moe_every=0)")
            return
        router = self.moe_layers[0].router  # every MoE layer has the same router settings
        if "domain_ids" in router.needs_context and domain_ids is None:
            raise ConfigError(f"moe.router={router.name!r} needs domain_ids with every batch; none were given")
        if domain_ids is not None and tuple(domain_ids.shape) != shape:
            raise ConfigError(f"domain_ids have shape {tuple(domain_ids.shape)}; expected {shape} (one per token)")
        router.check_context(routing_context(tokens, domain_ids))
        if routing_noise is not None and tuple(routing_noise.shape[:3]) != (len(self.moe_layers),) + shape:
            raise ConfigError(f"routing_noise has shape {tuple(routing_noise.shape)}; expected "
                              f"[{len(self.moe_layers)} MoE layers, {shape[0]}, {shape[1]}, noise width]")
        router.check_noise(shape[0] * shape[1], None if routing_noise is None else routing_noise[0])

    def forward(self, F, params: dict, tokens, domain_ids=None, routing_noise=None):
        """routing_noise: optional U[0, 1) values [L_moe, B, S, W] for stochastic routers
        (drawn inside each layer when None), so that runs reproduce across frameworks."""
        logits, aux, _ = self.decode(F, params, tokens, None, domain_ids, routing_noise)
        return logits, aux

    def check_decode(self, tokens, cache) -> None:
        """``check_inputs`` for ``decode``: also the cached positions against max_seq_len, and
        the routers (autoregressive decoding needs causal routers)."""
        self.check_inputs(tokens)
        for layer in self.moe_layers[:1]:
            layer.router.require_causal()
        total = tokens.shape[1] + (cache[0][0].shape[1] if cache else 0)
        if total > self.config.max_seq_len:
            raise ConfigError(f"decoding position {total} exceeds model.max_seq_len={self.config.max_seq_len}")

    def decode(self, F, params: dict, tokens, cache=None, domain_ids=None, routing_noise=None, last_only=False):
        """``forward`` with a KV cache, for generation: tokens [B, S] at positions P..P+S-1
        after the P positions that ``cache`` holds (None: P = 0) -> (logits, aux, new cache:
        one (k, v) per block, each [B, P + S, Hkv, D], or with latent attention (c, k_r),
        [B, P + S, C] and [B, P + S, Dr]: ``models.latent_attention``); ``last_only``: logits of the last
        position only, [B, 1, V] (a prefill needs no more). Decoding one token at a time gives
        the full forward's logits for routers that route each token on its own (dropless
        dispatch: a capacity's drops depend on the batch)."""
        c = self.config
        seq = tokens.shape[1]
        past = 0 if cache is None else cache[0][0].shape[1]
        positions = F.arange(seq, F.float32)
        rope = rope_tables(F, positions + past if past else positions, c.rotary_dim, c.rope_theta, self.yarn)
        window = self.config.sliding_window if self.config.layer_types else 0
        bias = (causal_bias(F, seq, past), causal_bias(F, seq, past, window) if window else None)
        return self.run_blocks(F, params, tokens, rope, bias, cache, None, domain_ids,
                               routing_noise, last_only)

    def decode_at(self, F, params: dict, tokens, position, cache):
        """``decode`` of one token per row into fixed-length caches, whose shapes do not
        change from step to step (MindSpore compiles it once): tokens [B, 1] at ``position``
        (a 0-d index tensor, the same for every row), cache: one (k, v) per block, each
        [B, M, Hkv, D] with positions < ``position`` filled (``prefill``) -> (logits
        [B, 1, V], aux, cache with ``position`` written). Keys past ``position`` are masked,
        so the logits equal ``decode``'s."""
        length = cache[0][0].shape[1]
        rope = rope_tables(F, F.cast(F.reshape(position, (1,)), F.float32), self.config.rotary_dim,
                           self.config.rope_theta, self.yarn)
        window = self.config.sliding_window if self.config.layer_types else 0
        bias = (cache_bias(F, position, length), cache_bias(F, position, length, window) if window else None)
        return self.run_blocks(F, params, tokens, rope, bias, cache, position)

    def prefill(self, F, params: dict, tokens, length: int):
        """``decode`` of a prompt for ``decode_at``: tokens [B, S] at positions 0..S-1 ->
        (logits of the last position [B, 1, V], aux, cache: ``decode``'s with ``length``
        positions, zero from position S on: slots not written yet)."""
        logits, aux, cache = self.decode(F, params, tokens, last_only=True)

        def extend(x):
            shape = tuple(x.shape)
            return F.concat([x, F.zeros((shape[0], length - shape[1]) + shape[2:], x.dtype)], 1)
        return logits, aux, tuple((extend(k), extend(v)) for k, v in cache)

    def run_blocks(self, F, params: dict, tokens, rope, bias, cache, position, domain_ids=None, routing_noise=None,
                   last_only=False):
        """embed -> blocks (each with its cache entry, see ``Block.forward``) -> norm -> logits:
        the body of ``decode`` and ``decode_at``; bias = (full attention's, sliding-window
        blocks' or None)."""
        c = self.config
        batch, seq = tokens.shape
        ids = F.reshape(F.cast(tokens, F.index_dtype), (batch * seq,))
        embed = params["model.embed_tokens.weight"]
        h = F.reshape(F.gather_rows(embed, ids), (batch, seq, c.d_model))
        layer_auxes, new_cache = (), ()
        for i, block in enumerate(self.blocks):
            noise = None if routing_noise is None or not block.is_moe else routing_noise[len(layer_auxes)]
            h, aux, kv = block.forward(F, params, h, rope, bias[1] if block.window else bias[0],
                                       routing_context(tokens, domain_ids, noise),
                                       None if cache is None else cache[i], position)
            new_cache = new_cache + (kv,)
            if block.is_moe:
                layer_auxes = layer_auxes + (aux,)
        h = self.final_norm.forward(F, params, h[:, seq - 1:] if last_only else h)
        logits = F.linear(h, embed if c.tie_embeddings else params["lm_head.weight"])
        return logits, self.combine_aux(F, layer_auxes), new_cache

    def combine_aux(self, F, layer_auxes: tuple) -> dict:
        """Per-layer MoE aux dicts -> the model aux described in the class docstring."""
        if not layer_auxes:
            return {"loss": F.zeros((), F.float32)}
        aux = {}
        for key in layer_auxes[0]:
            stacked = F.stack([a[key] for a in layer_auxes], 0)
            if key == "routing_log_prob":  # log-probability of the whole routing: sum over layers
                aux[key] = F.sum(stacked, 0)
                continue
            aux["layers." + key] = stacked
            if key == "tokens_per_expert":
                aux[key] = stacked
            elif key in SUMMED:
                aux[key] = F.sum(stacked, 0)
            else:
                aux[key] = F.mean(stacked, 0)
        return aux

    def layer_aux(self, aux: dict, moe_index: int) -> dict:
        """The aux of the ``moe_index``-th MoE layer (``self.moe_layers[moe_index]``)."""
        return {key[len("layers."):]: value[moe_index] for key, value in aux.items() if key.startswith("layers.")}
