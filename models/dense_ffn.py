"""The dense FFN block of Llama (SwiGLU; Shazeer 2020, arXiv 2002.05202) or GPT (GELU):
SwiGLU: y = down(silu(gate(x)) * up(x)); GELU: y = down(gelu(up(x))); bias-free."""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, normal_init
from models.adaptable import Adaptable


def ffn_matrices(ffn_type: str) -> int:
    """Weight matrices of one FFN: 3 for SwiGLU and clamped SwiGLU (gate, up, down), 2 for GELU."""
    return 2 if ffn_type == "gelu" else 3


class DenseFFN(Adaptable):
    """Weights stored [out, in] like HF: ``gate_proj`` (SwiGLU only) and ``up_proj`` [f, d],
    ``down_proj`` [d, f], names under ``prefix`` (``model.layers.{i}.mlp.``)."""

    def __init__(self, d_model: int, ffn_hidden: int, ffn_type: str, init_std: float, prefix: str) -> None:
        self.d_model = d_model
        self.ffn_hidden = ffn_hidden
        self.swiglu = ffn_type == "swiglu"
        self.matrices = ffn_matrices(ffn_type)
        self.init_std = init_std
        self.prefix = prefix
        self.adapters = {}

    def param_specs(self) -> Dict[str, ParamSpec]:
        init = normal_init(self.init_std)
        d, f, p = self.d_model, self.ffn_hidden, self.prefix
        specs = {p + "up_proj.weight": ParamSpec((f, d), init), p + "down_proj.weight": ParamSpec((d, f), init)}
        if self.swiglu:
            specs[p + "gate_proj.weight"] = ParamSpec((f, d), init)
        return specs

    @property
    def flops_per_token(self) -> int:
        """Forward FLOPs for one token: 2 per multiply-add per matrix."""
        return 2 * self.matrices * self.d_model * self.ffn_hidden

    def forward(self, F, params: dict, x):
        """x [..., d] -> [..., d]."""
        up = self.project(F, params, x, "up_proj")
        hidden = F.silu(self.project(F, params, x, "gate_proj")) * up if self.swiglu else F.gelu(up)
        return self.project(F, params, hidden, "down_proj")
