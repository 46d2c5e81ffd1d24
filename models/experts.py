"""Expert FFNs computed for all local experts at once: batched (capacity buffers [E, C, d])
or grouped (rows sorted by expert), never a Python loop over experts in models/."""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, constant_init, normal_init, prefixed
from models.moe_config import MoEConfig


def clamped_swiglu(F, gate, up, alpha: float, limit: float):
    """gpt-oss's gated unit: g = min(gate, L), u = clip(up, -L, L), (u + 1) * g * sigmoid(alpha g)."""
    gate = F.clip(gate, -float("inf"), limit)
    return (F.clip(up, -limit, limit) + 1.0) * gate * F.sigmoid(alpha * gate)


class Experts:
    """E FFNs. SwiGLU: down(silu(x W_gate) * (x W_up)); GELU: down(gelu(x W_up)); clamped SwiGLU
    (gpt-oss, ``clamped_swiglu``): down(h) with h = ``clamped_swiglu``(x W_gate, x W_up).
    Weights: w_gate, w_up [E, d, f], w_down [E, f, d] (under expert parallelism a rank holds
    its E/ep experts: ``models.dispatch.expert_parallel``); with ``expert_bias`` also
    b_gate, b_up [E, f] and b_down [E, d] (init 0), added after each projection."""

    def __init__(self, config: MoEConfig, prefix: str = "experts.") -> None:
        self.config = config
        self.prefix = prefix
        self.gated = config.expert_type != "gelu"

    def param_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        init = normal_init(c.expert_init_std)
        specs = {"w_up": ParamSpec((c.num_experts, c.d_model, c.ffn_hidden), init, expert_sharded=True),
                 "w_down": ParamSpec((c.num_experts, c.ffn_hidden, c.d_model), init, expert_sharded=True)}
        if self.gated:
            specs["w_gate"] = ParamSpec((c.num_experts, c.d_model, c.ffn_hidden), init, expert_sharded=True)
        if c.expert_bias:
            for name in ("up", "gate") if self.gated else ("up",):
                specs["b_" + name] = ParamSpec((c.num_experts, c.ffn_hidden), constant_init(0.0), expert_sharded=True)
            specs["b_down"] = ParamSpec((c.num_experts, c.d_model), constant_init(0.0), expert_sharded=True)
        return prefixed(self.prefix, specs)

    @property
    def flops_per_row(self) -> int:
        """Forward FLOPs for one token through one expert: 2 per multiply-add per matrix."""
        return 2 * (3 if self.gated else 2) * self.config.d_model * self.config.ffn_hidden

    def traffic_metrics(self, F, expert_out) -> dict:
        """Rows moved between ranks: none, every expert is local
        (``models.dispatch.expert_parallel`` counts them under expert parallelism)."""
        return {}

    def activate(self, F, gate, up):
        """The hidden units [..., f] from the gate and up projections (gate None for GELU)."""
        c = self.config
        if c.expert_type == "clamped_swiglu":
            return clamped_swiglu(F, gate, up, c.swiglu_alpha, c.swiglu_limit)
        return F.silu(gate) * up if self.gated else F.gelu(up)

    def batched(self, F, params: dict, x):
        """x [E, C, d] -> [E, C, d]: expert e applied to its C rows (one bmm per matrix)."""
        def project(h, name):
            y = F.bmm(h, params[self.prefix + "w_" + name])
            return y + F.expand_dims(params[self.prefix + "b_" + name], 1) if self.config.expert_bias else y

        hidden = self.activate(F, project(x, "gate") if self.gated else None, project(x, "up"))
        return project(hidden, "down")

    def grouped(self, F, params: dict, x, tokens_per_expert):
        """x [N, d] sorted by expert, tokens_per_expert [E] -> [N, d] (grouped matmul);
        rows past sum(tokens_per_expert) come back as zeros. A row's bias is its expert's,
        as the grouped product of a ones column with b reshaped [E, 1, width]."""
        ones = F.ones((x.shape[0], 1), x.dtype) if self.config.expert_bias else None

        def project(h, name):
            y = F.grouped_matmul(h, params[self.prefix + "w_" + name], tokens_per_expert)
            if ones is None:
                return y
            bias = params[self.prefix + "b_" + name]
            return y + F.grouped_matmul(ones, F.reshape(bias, (bias.shape[0], 1, bias.shape[1])), tokens_per_expert)

        hidden = self.activate(F, project(x, "gate") if self.gated else None, project(x, "up"))
        return project(hidden, "down")
