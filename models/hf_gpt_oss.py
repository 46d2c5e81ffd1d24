"""Our MoE block <-> gpt-oss's (``gpt_oss``) HF tensors (numpy arrays). gpt-oss keeps the block
under ``model.layers.{i}.mlp.``, ours under ``model.layers.{i}.block_sparse_moe.``:

- ``router.weight`` [E, d] (ours [d, E], x @ W) and ``router.bias`` [E] (ours, the ``topk``
  router's gate bias);
- ``experts.gate_up_proj`` [E, d, 2f], [in, out] with gate and up columns alternating (gate
  at even columns), and ``experts.gate_up_proj_bias`` [E, 2f] likewise <-> our w_gate, w_up
  [E, d, f] and b_gate, b_up [E, f];
- ``experts.down_proj`` [E, f, d] and ``experts.down_proj_bias`` [E, d]: our w_down, b_down.

Every other name (attention with its biases and ``sinks``, norms, embeddings) is the same."""
from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np

from core.errors import ConfigError

OURS_BLOCK = re.compile(r"(?P<layer>.*\.)block_sparse_moe\.(?P<rest>.+)$")
HF_BLOCK = re.compile(r"(?P<layer>.*\.)mlp\.(?P<rest>.+)$")
SAME = {"router.bias": "router.bias", "experts.w_down": "experts.down_proj", "experts.b_down": "experts.down_proj_bias"}
FUSED = {"experts.gate_up_proj": ("experts.w_gate", "experts.w_up"),
         "experts.gate_up_proj_bias": ("experts.b_gate", "experts.b_up")}
FROM_SAME = {hf: ours for ours, hf in SAME.items()}


def deinterleaved(gate_up: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """gpt-oss's fused ``experts.gate_up_proj`` [E, d, 2f] (or its bias [E, 2f]), whose last axis
    alternates gate and up columns -> (gate, up), each [..., f] (our w_gate/w_up, b_gate/b_up)."""
    gate_up = np.asarray(gate_up)
    if gate_up.shape[-1] % 2:
        raise ConfigError(f"gpt-oss gate_up tensor has shape {list(gate_up.shape)}: its last axis must be 2 * f")
    return np.ascontiguousarray(gate_up[..., 0::2]), np.ascontiguousarray(gate_up[..., 1::2])


def interleaved(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(gate, up) [..., f] -> gpt-oss's fused [..., 2f] with gate at even and up at odd columns."""
    gate, up = np.asarray(gate), np.asarray(up)
    return np.stack([gate, up], -1).reshape(gate.shape[:-1] + (2 * gate.shape[-1],))


def to_gpt_oss(params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Our params -> gpt-oss's HF names and layout (a block parameter gpt-oss lacks: one line)."""
    blocks = {name: OURS_BLOCK.match(name) for name in params}
    out = {name: value for name, value in params.items() if not blocks[name]}
    known = {"router.weight", *SAME, *(name for pair in FUSED.values() for name in pair)}
    unknown = sorted(name for name, block in blocks.items() if block and block["rest"] not in known)
    if unknown:
        raise ConfigError(f"parameter {unknown[0]} has no gpt-oss equivalent")
    for layer in sorted({block["layer"] for block in blocks.values() if block}):
        ours, hf = layer + "block_sparse_moe.", layer + "mlp."
        out[hf + "router.weight"] = np.asarray(params[ours + "router.weight"]).T.copy()
        out.update({hf + theirs: params[ours + mine] for mine, theirs in SAME.items()})
        out.update({hf + fused: interleaved(params[ours + gate], params[ours + up]) for fused, (gate, up) in FUSED.items()})
    return out


def from_gpt_oss(hf: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """gpt-oss's HF names and layout -> our params."""
    out = {}
    for name, value in hf.items():
        block = HF_BLOCK.match(name)
        if not block:
            out[name] = value
            continue
        prefix, rest = block["layer"] + "block_sparse_moe.", block["rest"]
        if rest == "router.weight":
            out[prefix + rest] = np.asarray(value).T.copy()
        elif rest in FROM_SAME:
            out[prefix + FROM_SAME[rest]] = value
        elif rest in FUSED:
            gate, up = deinterleaved(value)
            out[prefix + FUSED[rest][0]], out[prefix + FUSED[rest][1]] = gate, up
        else:
            raise ConfigError(f"checkpoint tensor {name} is not part of a gpt-oss MoE block")
    return out


def gpt_oss_shapes(shapes: Dict[str, tuple]) -> Dict[str, tuple]:
    """Our parameter shapes -> the gpt-oss names and shapes ``to_gpt_oss`` gives (no arrays)."""
    out = {}
    for name, shape in shapes.items():
        block = OURS_BLOCK.match(name)
        rest = block["rest"] if block else ""
        if not block or rest in ("experts.w_up", "experts.b_up"):
            out.update({} if block else {name: tuple(shape)})
            continue
        prefix = block["layer"] + "mlp."
        if rest == "router.weight":
            out[prefix + rest] = tuple(shape[::-1])
        elif rest in SAME:
            out[prefix + SAME[rest]] = tuple(shape)
        else:
            fused = {gate: hf for hf, (gate, _) in FUSED.items()}.get(rest, rest)
            out[prefix + fused] = tuple(shape[:-1]) + (2 * shape[-1],)
    return out
