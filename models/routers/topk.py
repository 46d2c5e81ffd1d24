"""Softmax top-k router (GShard, Mixtral): p = softmax(x W), the k largest p per token,
weights optionally renormalised over the chosen k (``moe.renormalize``)."""
from __future__ import annotations

from models.losses import router_z_loss, switch_balance_loss
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.routers.registry import register_router


@register_router("topk")
class TopKRouter(LinearGateRouter):
    renormalize_weights = None  # None: follow moe.renormalize

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        c = self.config
        logits = F.matmul(x, self.param(params, "weight"))
        probs = F.softmax(logits, -1)
        weight, index = F.topk(probs, c.top_k)
        renormalize = c.renormalize if self.renormalize_weights is None else self.renormalize_weights
        if renormalize:
            weight = weight / F.sum(weight, -1, True)
        losses = {"balance": switch_balance_loss(F, probs, index, c.num_experts, self.parallel),
                  "z": router_z_loss(F, logits)}
        return {"logits": logits, "probs": probs, "expert_index": index, "expert_weight": weight,
                "losses": losses}
