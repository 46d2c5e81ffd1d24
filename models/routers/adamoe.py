"""AdaMoE router (Zeng et al. 2024, arXiv 2406.13233): n true experts plus m null experts.

h = [x W_g ; x W_null] over n + m slots, p = softmax(h) in float32, top-k over all n + m.
A null expert has no parameters and outputs 0. Weights are renormalised over the selected
*true* experts only: w_i / sum(selected true w), denominator 1 when none is true. Balance
loss: ``null_bucket_balance_loss`` (all nulls one averaged bucket).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from core.errors import ConfigError
from core.params import ParamSpec, truncated_normal_init
from models.losses import null_bucket_balance_loss, router_z_loss
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.routers.registry import register_router


@register_router("adamoe")
class AdaMoERouter(LinearGateRouter):
    def setup(self) -> None:
        if self.config.num_null_experts < 1:
            raise ConfigError("moe.num_null_experts=0: router 'adamoe' needs at least one null expert")

    def weight_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        specs = super().weight_specs()
        specs["null_weight"] = ParamSpec((c.d_model, c.num_null_experts), truncated_normal_init(c.router_std))
        return specs

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        c = self.config
        logits = F.concat([F.matmul(x, self.param(params, "weight")),
                           F.matmul(x, self.param(params, "null_weight"))], -1)
        probs = F.softmax(logits, -1)
        top_probs, index = F.topk(probs, c.top_k)
        true_probs = F.where(index < c.num_experts, top_probs, F.zeros((), F.float32))
        denominator = F.sum(true_probs, -1, True)
        denominator = F.where(denominator > 0, denominator, F.ones((), F.float32))
        losses = {"balance": null_bucket_balance_loss(F, probs, index, c.num_experts, c.num_null_experts,
                                                       self.parallel),
                  "z": router_z_loss(F, logits)}
        return {"logits": logits, "probs": probs, "expert_index": index,
                "expert_weight": true_probs / denominator, "losses": losses}


def null_gate_from_pretrained(gate_weight: np.ndarray, num_null: int) -> np.ndarray:
    """Initialise W_null [d, m] from a pretrained gate [d, n] by repeating its columns m/n
    times (the paper's conversion of a pretrained MoE)."""
    n = gate_weight.shape[1]
    if num_null % n:
        raise ConfigError(f"moe.num_null_experts={num_null} must be a multiple of num_experts={n} "
                          "to initialise the null gate from a pretrained gate")
    return np.tile(gate_weight, (1, num_null // n))
