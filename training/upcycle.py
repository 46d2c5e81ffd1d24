"""Pretrained checkpoints into other MoE shapes, on numpy parameters (our names):

- ``upcycle``: a dense model -> an MoE (sparse upcycling, Komatsuzaki et al. 2022, arXiv
  2212.05055): every expert starts as the block's dense FFN, or with ``split = g`` as one of
  g slices of its hidden units (fine-grained experts), plus a new router.
- ``to_adamoe``: a top-k MoE -> AdaMoE (Zeng et al. 2024): m null experts added, the null gate
  initialised by repeating the pretrained gate's columns m/n times, as the authors do.

Step-0 equality with the dense model. An expert that copies the dense FFN gives
y = sum_i w_i FFN(x) = FFN(x) whenever a token's weights sum to one (top-k with
``renormalize``). With ``split = g`` expert e holds slice e mod g of the hidden units, its
down projection scaled by g, so y = FFN(x) when each slice's selected weights sum to 1/g:
e.g. ``router_std=0`` (uniform probabilities) with top_k = num_experts.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from core.params import init_params
from models.moe_config import MoEConfig
from models.routers.adamoe import null_gate_from_pretrained
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from training.hf_checkpoint import check_params

Params = Dict[str, np.ndarray]


def upcycle(config: TransformerConfig, params: Params, num_experts: int, top_k: int, split: int = 1,
            moe_every: int = 1, router_std: Optional[float] = None, seed: int = 0,
            **moe_settings) -> Tuple[TransformerConfig, Params]:
    """Dense ``config``/``params`` -> an MoE with ``num_experts`` experts of ffn_hidden / split
    hidden units in every ``moe_every``-th block; ``router_std`` None: the router's own init
    (Switch), 0: zeros; ``moe_settings`` go to MoEConfig (e.g. router, num_null_experts)."""
    if config.moe_every != 0:
        raise ConfigError(f"model.moe_every={config.moe_every}: upcycling starts from a dense model (moe_every 0)")
    if split < 1 or config.ffn_hidden % split or num_experts % split:
        raise ConfigError(f"upcycle split={split} must divide model.ffn_hidden={config.ffn_hidden} "
                          f"and num_experts={num_experts}")
    check_params(config, params, "upcycle")
    hidden = config.ffn_hidden // split
    moe = MoEConfig(**{**dict(d_model=config.d_model, ffn_hidden=hidden, num_experts=num_experts, top_k=top_k,
                              expert_type=config.ffn_type, renormalize=True, router_init_std=router_std or 0.0),
                       **moe_settings})
    new_config = replace(config, moe_every=moe_every, moe=moe).validate()
    model = Transformer(new_config)
    specs = model.param_specs()
    out = {name: params[name] for name in specs if name in params}
    router_specs = {name: spec for layer in model.moe_layers for name, spec in layer.router.param_specs().items()}
    fresh = init_params(router_specs, seed)
    for name in router_specs:
        out[name] = fresh[name] if router_std != 0 else np.zeros_like(fresh[name])
    slices = np.arange(num_experts) % split
    for index in new_config.moe_layer_indices:
        dense, moe_prefix = f"model.layers.{index}.mlp.", f"model.layers.{index}.block_sparse_moe.experts."
        for ours, hf in (("w_up", "up_proj"), ("w_gate", "gate_proj")):
            if moe_prefix + ours in specs:
                rows = params[dense + hf + ".weight"].reshape(split, hidden, config.d_model)  # [g, f/g, d]
                out[moe_prefix + ours] = np.ascontiguousarray(np.transpose(rows[slices], (0, 2, 1)))
        columns = params[dense + "down_proj.weight"].reshape(config.d_model, split, hidden)  # [d, g, f/g]
        out[moe_prefix + "w_down"] = np.ascontiguousarray(np.transpose(columns[:, slices], (1, 2, 0)) * split)
    return new_config, out


def to_adamoe(config: TransformerConfig, params: Params, num_null_experts: int,
              top_k: int) -> Tuple[TransformerConfig, Params]:
    """A top-k MoE -> AdaMoE with ``num_null_experts`` null experts (a multiple of
    num_experts) and the raised ``top_k``; every other weight is kept."""
    if config.moe_every == 0 or config.moe.router != "topk":
        raise ConfigError(f"moe.router={config.moe.router if config.moe_every else None!r}: "
                          "AdaMoE conversion starts from a top-k MoE")
    check_params(config, params, "to_adamoe")
    moe = replace(config.moe, router="adamoe", num_null_experts=num_null_experts, top_k=top_k)
    new_config = replace(config, moe=moe).validate()
    out = dict(params)
    for layer in Transformer(new_config).moe_layers:
        out[layer.router.prefix + "null_weight"] = null_gate_from_pretrained(params[layer.router.prefix + "weight"],
                                                                             num_null_experts)
    return new_config, out
