"""Softmax top-k router (GShard, Mixtral): p = softmax(x W (+ b)), the k largest p per token,
weights optionally renormalised over the chosen k (``moe.renormalize``).

``gate_bias`` adds a trainable bias b [E] (init 0) to the logits, as gpt-oss's router does.
gpt-oss takes top-k of the logits and a softmax over those k; softmax is monotone and the
renormalised top-k of p is exactly softmax over the chosen logits, so gpt-oss routes as
``topk`` with ``gate_bias: true`` and ``moe.renormalize: true`` (values and gradients alike)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from core.params import ParamSpec, constant_init
from core.rules import FLAG, setting
from models.losses import router_z_loss, switch_balance_loss
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.routers.registry import register_router


@dataclass
class TopKOptions:
    gate_bias: bool = setting(False, FLAG)


@register_router("topk")
class TopKRouter(LinearGateRouter):
    Options = TopKOptions
    renormalize_weights = None  # None: follow moe.renormalize

    def weight_specs(self) -> Dict[str, ParamSpec]:
        specs = super().weight_specs()
        if self.options.gate_bias:
            specs["bias"] = ParamSpec((self.config.num_experts,), constant_init(0.0))
        return specs

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        c = self.config
        logits = F.matmul(x, self.param(params, "weight"))
        if self.options.gate_bias:
            logits = logits + self.param(params, "bias")
        probs = F.softmax(logits, -1)
        weight, index = F.topk(probs, c.top_k)
        renormalize = c.renormalize if self.renormalize_weights is None else self.renormalize_weights
        if renormalize:
            weight = weight / F.sum(weight, -1, True)
        losses = {"balance": switch_balance_loss(F, probs, index, c.num_experts, self.parallel),
                  "z": router_z_loss(F, logits)}
        return {"logits": logits, "probs": probs, "expert_index": index, "expert_weight": weight,
                "losses": losses}
