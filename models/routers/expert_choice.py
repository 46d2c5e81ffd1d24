"""Expert-choice routing (Zhou et al. 2022): each expert picks its tokens.

S = softmax(x W_g) [T, E] (over experts, float32); expert e takes the C tokens with the
largest S[:, e]: (G, I) = top-C(S^T), slot_token = I [E, C], slot_weight = G [E, C], with
C = ceil(T * c / E) capped at T, c = ``capacity_factor`` (router option, default 2: the mean
number of experts per token; ``moe.capacity_factor`` and ``moe.top_k`` are not read).
Every expert processes exactly C tokens; a token may get 0 or several experts. No auxiliary
loss (balanced by construction, as in the paper).

Not causal: a token's experts depend on the other tokens of the batch, including later
ones, so ``require_causal`` refuses it for autoregressive decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.rules import number, setting
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.routers.registry import register_router


@dataclass
class ExpertChoiceOptions:
    capacity_factor: float = setting(2.0, number(0.0, low_open=True))


@register_router("expert_choice")
class ExpertChoiceRouter(LinearGateRouter):
    Options = ExpertChoiceOptions
    causal = False
    null_experts = False
    fills_slots = True

    def capacity(self, num_tokens: int) -> int:
        """C = ceil(T * c / E), at least 1 and at most T."""
        return min(num_tokens, max(1, math.ceil(num_tokens * self.options.capacity_factor / self.config.num_experts)))

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d] -> slot_token [E, C], slot_weight [E, C], requested_assignments = E * C."""
        num_tokens = x.shape[0]
        capacity = self.capacity(num_tokens)
        logits = F.matmul(x, self.param(params, "weight"))
        probs = F.softmax(logits, -1)
        slot_weight, slot_token = F.topk(F.transpose(probs, (1, 0)), capacity)
        requested = F.ones((), F.float32) * (self.config.num_experts * capacity)
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "requested_assignments": requested, "losses": {}}
