"""Expert FFNs computed for all local experts at once: batched (capacity buffers [E, C, d])
or grouped (rows sorted by expert), never a Python loop over experts in models/."""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, normal_init, prefixed
from models.moe_config import MoEConfig


class Experts:
    """E bias-free FFNs. SwiGLU: down(silu(x W_gate) * (x W_up)); GELU: down(gelu(x W_up)).
    Weights: w_gate, w_up [E, d, f], w_down [E, f, d] (under expert parallelism a rank holds
    its E/ep experts: ``models.dispatch.expert_parallel``)."""

    def __init__(self, config: MoEConfig, prefix: str = "experts.") -> None:
        self.config = config
        self.prefix = prefix
        self.swiglu = config.expert_type == "swiglu"

    def param_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        init = normal_init(c.expert_init_std)
        specs = {"w_up": ParamSpec((c.num_experts, c.d_model, c.ffn_hidden), init, expert_sharded=True),
                 "w_down": ParamSpec((c.num_experts, c.ffn_hidden, c.d_model), init, expert_sharded=True)}
        if self.swiglu:
            specs["w_gate"] = ParamSpec((c.num_experts, c.d_model, c.ffn_hidden), init, expert_sharded=True)
        return prefixed(self.prefix, specs)

    @property
    def flops_per_row(self) -> int:
        """Forward FLOPs for one token through one expert: 2 per multiply-add per matrix."""
        return 2 * (3 if self.swiglu else 2) * self.config.d_model * self.config.ffn_hidden

    def traffic_metrics(self, F, expert_out) -> dict:
        """Rows moved between ranks: none, every expert is local
        (``models.dispatch.expert_parallel`` counts them under expert parallelism)."""
        return {}

    def batched(self, F, params: dict, x):
        """x [E, C, d] -> [E, C, d]: expert e applied to its C rows (one bmm per matrix)."""
        p = self.prefix
        up = F.bmm(x, params[p + "w_up"])
        hidden = F.silu(F.bmm(x, params[p + "w_gate"])) * up if self.swiglu else F.gelu(up)
        return F.bmm(hidden, params[p + "w_down"])

    def grouped(self, F, params: dict, x, tokens_per_expert):
        """x [N, d] sorted by expert, tokens_per_expert [E] -> [N, d] (grouped matmul);
        rows past sum(tokens_per_expert) come back as zeros."""
        p = self.prefix
        up = F.grouped_matmul(x, params[p + "w_up"], tokens_per_expert)
        if self.swiglu:
            hidden = F.silu(F.grouped_matmul(x, params[p + "w_gate"], tokens_per_expert)) * up
        else:
            hidden = F.gelu(up)
        return F.grouped_matmul(hidden, params[p + "w_down"], tokens_per_expert)
