"""Our parameter dict <-> the HF Llama/Mixtral per-expert layout (numpy arrays).

Our names already are HF's wherever the layout matches: ``model.embed_tokens.weight``,
``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight``, ``model.layers.{i}.input_layernorm.weight``,
``model.layers.{i}.post_attention_layernorm.weight``, ``model.layers.{i}.mlp.{gate,up,down}_proj.weight``,
``model.norm.weight``, ``lm_head.weight`` (absent when tied), with linear weights stored
[out, in] as HF does. Two things differ, inside ``model.layers.{i}.block_sparse_moe.``:

- ``router.weight`` [d, E] (x @ W) <-> HF ``gate.weight`` [E, d];
- stacked experts ``experts.w_gate`` [E, d, f], ``experts.w_up`` [E, d, f],
  ``experts.w_down`` [E, f, d] <-> HF per-expert ``experts.{j}.w1.weight`` [f, d] (gate),
  ``experts.{j}.w3.weight`` [f, d] (up), ``experts.{j}.w2.weight`` [d, f] (down).
  GELU experts have no gate and map to w3/w2 only (HF Mixtral has no GELU experts).

Any other name (e.g. AdaMoE's ``router.null_weight``) has no HF counterpart and passes
through unchanged, so ``from_hf(to_hf(p)) == p`` for every model.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from models.errors import ConfigError

MOE = r"(?P<moe>.*\.block_sparse_moe\.)"
OURS_EXPERT = re.compile(MOE + r"experts\.(?P<ours>w_gate|w_up|w_down)$")
HF_EXPERT = re.compile(MOE + r"experts\.(?P<j>\d+)\.(?P<hf>w1|w2|w3)\.weight$")
OURS_ROUTER = re.compile(MOE + r"router\.weight$")
HF_ROUTER = re.compile(MOE + r"gate\.weight$")
TO_HF = {"w_gate": "w1", "w_down": "w2", "w_up": "w3"}
FROM_HF = {hf: ours for ours, hf in TO_HF.items()}


def to_hf(params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our params -> HF Llama/Mixtral names and layout."""
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        expert, router = OURS_EXPERT.match(name), OURS_ROUTER.match(name)
        if expert:
            for j in range(value.shape[0]):
                out[f"{expert['moe']}experts.{j}.{TO_HF[expert['ours']]}.weight"] = value[j].T.copy()
        elif router:
            out[router["moe"] + "gate.weight"] = value.T.copy()
        else:
            out[name] = value
    return out


def from_hf(hf: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF Llama/Mixtral names and layout -> our params (experts stacked in index order)."""
    out, experts = {}, {}
    for name, value in hf.items():
        value = np.asarray(value)
        expert, router = HF_EXPERT.match(name), HF_ROUTER.match(name)
        if expert:
            experts.setdefault(expert["moe"] + "experts." + FROM_HF[expert["hf"]], {})[int(expert["j"])] = value.T
        elif router:
            out[router["moe"] + "router.weight"] = value.T.copy()
        else:
            out[name] = value
    for name, per_expert in experts.items():
        if sorted(per_expert) != list(range(len(per_expert))):
            raise ConfigError(f"checkpoint has experts {sorted(per_expert)} for {name}; expected 0..{len(per_expert) - 1}")
        out[name] = np.stack([per_expert[j] for j in range(len(per_expert))], 0)
    return out


def hf_shapes(shapes: Dict[str, tuple]) -> Dict[str, tuple]:
    """Our parameter shapes -> the HF names and shapes ``to_hf`` would produce (no arrays)."""
    out = {}
    for name, shape in shapes.items():
        expert, router = OURS_EXPERT.match(name), OURS_ROUTER.match(name)
        if expert:
            for j in range(shape[0]):
                out[f"{expert['moe']}experts.{j}.{TO_HF[expert['ours']]}.weight"] = tuple(shape[1:][::-1])
        elif router:
            out[router["moe"] + "gate.weight"] = tuple(shape[::-1])
        else:
            out[name] = tuple(shape)
    return out
