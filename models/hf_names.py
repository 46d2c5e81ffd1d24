"""Our parameter dict <-> the HF Llama, Mixtral, Qwen2(-MoE), Qwen3-MoE and OLMoE layouts
(numpy arrays). Qwen3-MoE and OLMoE name their tensors as Qwen2-MoE does, plus the
attention's ``self_attn.{q,k}_norm.weight`` (ours too). GLM-4.5 (``glm4_moe``) too, except
that its ungated shared expert is ``mlp.shared_experts.*`` (ours ``shared_expert.*``) and
its router's score-correction bias ``mlp.gate.e_score_correction_bias`` (ours
``router.bias``, the ``aux_free`` router's). DeepSeek-V3 (``deepseek_v3``) names its MoE block as
GLM-4.5 does; its latent attention's tensors are ours (``models.latent_attention``). gpt-oss's fused,
interleaved block has its own converter (``models.hf_gpt_oss``).

Our names already are HF's wherever the layout matches: ``model.embed_tokens.weight``,
``model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`` (and Qwen2's ``{q,k,v}_proj.bias``),
``model.layers.{i}.input_layernorm.weight``, ``model.layers.{i}.post_attention_layernorm.weight``,
``model.layers.{i}.mlp.{gate,up,down}_proj.weight``, ``model.norm.weight``, ``lm_head.weight``
(absent when tied), with linear weights stored [out, in] as HF does. Inside our MoE block
``model.layers.{i}.block_sparse_moe.`` two things differ:

- ``router.weight`` [d, E] (x @ W) <-> HF ``gate.weight`` [E, d];
- stacked experts ``experts.w_gate`` [E, d, f], ``experts.w_up`` [E, d, f],
  ``experts.w_down`` [E, f, d] <-> HF per-expert [out, in] weights, named by ``style``:
  Mixtral ``block_sparse_moe.experts.{j}.{w1,w3,w2}.weight`` (gate, up, down) or Qwen2-MoE
  ``mlp.experts.{j}.{gate,up,down}_proj.weight``. GELU experts have no gate.

Qwen2-MoE (and Qwen3-MoE, OLMoE) keeps the whole MoE block under ``mlp.`` (its shared expert too:
``mlp.shared_expert.*``, ``mlp.shared_expert_gate.weight``, our names under
``block_sparse_moe.``). ``from_hf`` reads either style, and also the fused experts that
transformers 5 holds in memory (``mlp.experts.gate_up_proj`` [E, 2f, d], gate rows first, and
``mlp.experts.down_proj`` [E, d, f]: what a GGUF file loads as). Any other name (e.g.
AdaMoE's ``router.null_weight``) only changes prefix, so ``from_hf(to_hf(p, s)) == p``.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np

from core.errors import ConfigError

OURS_MOE = re.compile(r"(?P<layer>.*\.)block_sparse_moe\.(?P<rest>.+)$")
HF_MOE = re.compile(r"(?P<layer>.*\.)(?P<block>block_sparse_moe|mlp)\.(?P<rest>.+)$")
DENSE_MLP = re.compile(r"(gate|up|down)_proj\.")  # a dense FFN's weights under mlp.
OURS_EXPERT = re.compile(r"experts\.(?P<ours>w_gate|w_up|w_down)$")
HF_EXPERT = re.compile(r"experts\.(?P<j>\d+)\.(?P<hf>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
HF_FUSED = re.compile(r"experts\.(?P<fused>gate_up_proj|down_proj)$")
QWEN_NAMES = {"w_gate": "gate_proj", "w_down": "down_proj", "w_up": "up_proj"}
STYLES = {"mixtral": ("block_sparse_moe.", {"w_gate": "w1", "w_down": "w2", "w_up": "w3"}),
          "qwen2_moe": ("mlp.", QWEN_NAMES), "glm4_moe": ("mlp.", QWEN_NAMES), "deepseek_v3": ("mlp.", QWEN_NAMES)}
FROM_HF = {hf: ours for _, names in STYLES.values() for ours, hf in names.items()}
GLM_NAMES = {"router.bias": "gate.e_score_correction_bias", "shared_expert.": "shared_experts."}
RENAMED = {"glm4_moe": GLM_NAMES, "deepseek_v3": GLM_NAMES}
FROM_RENAMED = {hf: ours for names in RENAMED.values() for ours, hf in names.items()}


def renamed(rest: str, names: Dict[str, str]) -> str:
    """``rest`` with its leading name (a key of ``names``) replaced by that key's value."""
    for old, new in names.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def check_style(style: str) -> Tuple[str, Dict[str, str]]:
    if style not in STYLES:
        raise ConfigError(f"HF MoE layout {style!r}: valid layouts are {', '.join(STYLES)}")
    return STYLES[style]


def hf_name(name: str, style: str, expert: int = 0) -> str:
    """The HF name of our parameter ``name`` (of slice ``expert`` for a stacked expert weight)."""
    block, names = check_style(style)
    moe = OURS_MOE.match(name)
    if not moe:
        return name
    prefix, rest = moe["layer"] + block, moe["rest"]
    stacked = OURS_EXPERT.match(rest)
    if stacked:
        return f"{prefix}experts.{expert}.{names[stacked['ours']]}.weight"
    return prefix + ("gate.weight" if rest == "router.weight" else renamed(rest, RENAMED.get(style, {})))


def layout(name: str) -> str:
    """How our parameter maps to HF tensors: ``stacked`` (one [out, in] per expert),
    ``transposed`` (the router) or ``same``."""
    moe = OURS_MOE.match(name)
    if moe and OURS_EXPERT.match(moe["rest"]):
        return "stacked"
    return "transposed" if moe and moe["rest"] == "router.weight" else "same"


def to_hf(params: Dict[str, np.ndarray], style: str = "mixtral") -> Dict[str, np.ndarray]:
    """Our params -> HF names and layout (``style``: a key of ``STYLES``)."""
    out = {}
    for name, value in params.items():
        value, kind = np.asarray(value), layout(name)
        if kind == "stacked":
            for j in range(value.shape[0]):
                out[hf_name(name, style, j)] = value[j].T.copy()
        else:
            out[hf_name(name, style)] = value.T.copy() if kind == "transposed" else value
    return out


def from_hf(hf: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF names and layout (per-expert or fused) -> our params (experts stacked in index
    order). Two HF tensors that would give the same parameter (a fused tensor beside its
    per-expert ones, a block under both ``mlp.`` and ``block_sparse_moe.``) are refused by name."""
    out, experts, sources, first_expert = {}, {}, {}, {}

    def put(ours: str, value: np.ndarray, source: str) -> None:
        if ours in sources:
            raise ConfigError(f"checkpoint tensors {sources[ours]} and {source} both hold {ours}")
        sources[ours] = source
        out[ours] = value

    for name, value in hf.items():
        value, moe = np.asarray(value), HF_MOE.match(name)
        if not moe or (moe["block"] == "mlp" and DENSE_MLP.match(moe["rest"])):
            put(name, value, name)
            continue
        prefix, rest = moe["layer"] + "block_sparse_moe.", moe["rest"]
        expert, fused = HF_EXPERT.match(rest), HF_FUSED.match(rest)
        if expert:
            stacked = prefix + "experts." + FROM_HF[expert["hf"]]
            experts.setdefault(stacked, {})[int(expert["j"])] = value.T
            first_expert.setdefault(stacked, name)
        elif fused and fused["fused"] == "gate_up_proj":
            hidden = value.shape[1] // 2
            put(prefix + "experts.w_gate", np.ascontiguousarray(value[:, :hidden].transpose(0, 2, 1)), name)
            put(prefix + "experts.w_up", np.ascontiguousarray(value[:, hidden:].transpose(0, 2, 1)), name)
        elif fused:
            put(prefix + "experts.w_down", np.ascontiguousarray(value.transpose(0, 2, 1)), name)
        elif rest == "gate.weight":
            put(prefix + "router.weight", value.T.copy(), name)
        else:
            put(prefix + renamed(rest, FROM_RENAMED), value, name)
    for name, per_expert in experts.items():
        if sorted(per_expert) != list(range(len(per_expert))):
            raise ConfigError(f"checkpoint has experts {sorted(per_expert)} for {name}; expected 0..{len(per_expert) - 1}")
        put(name, np.stack([per_expert[j] for j in range(len(per_expert))], 0), first_expert[name])
    return out


def unfused_shapes(shapes: Dict[str, tuple], style: str = "qwen2_moe") -> Dict[str, tuple]:
    """HF tensor shapes with transformers 5's fused experts (``experts.gate_up_proj`` [E, 2f, d],
    ``experts.down_proj`` [E, d, f]) replaced by the per-expert names and shapes of ``style``
    that ``from_hf`` turns them into; a name that two tensors would give is refused."""
    block, names = check_style(style)
    out = {}
    for name, shape in shapes.items():
        moe = HF_MOE.match(name)
        fused = moe and HF_FUSED.match(moe["rest"])
        if not fused:
            parts = {name: tuple(shape)}
        elif len(shape) != 3 or (fused["fused"] == "gate_up_proj" and shape[1] % 2):
            raise ConfigError(f"tensor {name} has shape {list(shape)}; fused experts are "
                              f"{'[E, 2 * f, d]' if fused['fused'] == 'gate_up_proj' else '[E, d, f]'}")
        else:
            prefix, (experts, rows, columns) = moe["layer"] + block + "experts.", shape
            ours = ("w_gate", "w_up") if fused["fused"] == "gate_up_proj" else ("w_down",)
            parts = {f"{prefix}{j}.{names[w]}.weight": (rows // len(ours), columns)
                     for j in range(experts) for w in ours}
        clash = sorted(set(parts) & set(out))
        if clash:
            raise ConfigError(f"tensor {name} holds {clash[0]}, which the checkpoint also holds")
        out.update(parts)
    return out


def hf_shapes(shapes: Dict[str, tuple], style: str = "mixtral") -> Dict[str, tuple]:
    """Our parameter shapes -> the HF names and shapes ``to_hf`` would produce (no arrays)."""
    out = {}
    for name, shape in shapes.items():
        kind = layout(name)
        if kind == "stacked":
            out.update({hf_name(name, style, j): tuple(shape[1:][::-1]) for j in range(shape[0])})
        else:
            out[hf_name(name, style)] = tuple(shape[::-1]) if kind == "transposed" else tuple(shape)
    return out

