"""The shared expert of DeepSeekMoE (Dai et al. 2024, arXiv 2401.06066) and Qwen2-MoE: an
FFN every token passes through beside the routed experts, optionally scaled by a per-token
sigmoid gate (Qwen2-MoE):

    shared(x) = ffn(x)                      (moe.shared_expert_gate: false)
    shared(x) = sigmoid(x w_s^T) * ffn(x)   (true; w_s [1, d])
"""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, normal_init
from models.dense_ffn import DenseFFN
from models.moe_config import MoEConfig


class SharedExpert:
    """Weights under ``prefix`` (``model.layers.{i}.block_sparse_moe.``), HF Qwen2-MoE names:
    ``shared_expert.{gate,up,down}_proj.weight`` ([out, in]) and ``shared_expert_gate.weight`` [1, d]."""

    def __init__(self, config: MoEConfig, prefix: str) -> None:
        self.config = config
        self.gate_name = prefix + "shared_expert_gate.weight"
        self.ffn = DenseFFN(config.d_model, config.shared_expert_hidden, config.expert_type, config.expert_init_std,
                            prefix + "shared_expert.")

    def param_specs(self) -> Dict[str, ParamSpec]:
        specs = self.ffn.param_specs()
        if self.config.shared_expert_gate:
            specs[self.gate_name] = ParamSpec((1, self.config.d_model), normal_init(self.config.expert_init_std))
        return specs

    @property
    def flops_per_token(self) -> int:
        """Forward FLOPs for one token (the gate's 2d included)."""
        return self.ffn.flops_per_token + (2 * self.config.d_model if self.config.shared_expert_gate else 0)

    def forward(self, F, params: dict, x):
        """x [T, d] -> [T, d]."""
        y = self.ffn.forward(F, params, x)
        if self.config.shared_expert_gate:
            y = F.sigmoid(F.linear(x, params[self.gate_name])) * y
        return y
