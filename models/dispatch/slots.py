"""Dispatch for routers that fill expert slots themselves (expert choice, balanced
assignment, skip estimator, LocMoE capacity, LocMoE+ expert choice): each of the E experts has
C slots, ``slot_token`` [E, C] names the token in each slot (T = empty) and ``slot_weight``
[E, C] its combine weight."""
from __future__ import annotations

SLOT_DISPATCH = "slots"  # ``Router.dispatch_mode`` of routers that fill slots


class SlotDispatcher:
    """Plan (the slots' tokens) -> dispatch, every expert's C slots [E, C, d] -> the experts,
    one bmm per matrix -> combine, sum over filled slots of weight * expert output.
    ``slot_grad_scale`` [E, C] (optional in the routing) multiplies the gradient, not the
    value, of each slot's contribution: importance weights of unbiased estimators
    (models/routers/skip.py)."""

    def __init__(self, config, experts) -> None:
        self.config = config
        self.experts = experts

    def plan(self, F, routing: dict, num_tokens: int) -> dict:
        num_experts, capacity = routing["slot_token"].shape
        return {"token": F.reshape(F.cast(routing["slot_token"], F.index_dtype), (num_experts * capacity,)),
                "weight": routing["slot_weight"], "grad_scale": routing.get("slot_grad_scale")}

    def load(self, F, routing: dict, plan: dict, num_tokens: int) -> tuple:
        """(assignments requested, filled slots per expert [E], expert rows computed = E * C)."""
        slot_token = routing["slot_token"]
        return (routing["requested_assignments"], slot_counts(F, slot_token, num_tokens),
                F.ones((), F.float32) * (slot_token.shape[0] * slot_token.shape[1]))

    def dispatch(self, F, x, plan: dict):
        """x [T, d] -> expert_in [E, C, d] (empty slots read a zero row)."""
        num_experts, capacity = plan["weight"].shape
        padded = F.concat([x, F.zeros((1, x.shape[1]), x.dtype)], 0)
        return F.reshape(F.gather_rows(padded, plan["token"]), (num_experts, capacity, x.shape[1]))

    def run_experts(self, F, params: dict, expert_in, plan: dict):
        return self.experts.batched(F, params, expert_in)

    def combine(self, F, expert_out, plan: dict, x):
        """expert_out [E, C, d] -> y [T, d] = sum over filled slots of weight * expert(x)."""
        num_tokens, d = x.shape
        num_experts, capacity = plan["weight"].shape
        expert_out = F.reshape(expert_out, (num_experts * capacity, d))
        weight = F.cast(F.reshape(plan["weight"], (num_experts * capacity,)), x.dtype)
        contribution = expert_out * F.expand_dims(weight, -1)
        if plan["grad_scale"] is not None:
            scale = F.cast(F.reshape(plan["grad_scale"], (num_experts * capacity, 1)), x.dtype)
            value = F.stop_gradient(contribution)
            contribution = value + (contribution - value) * scale
        y = F.index_add(F.zeros((num_tokens + 1, d), x.dtype), plan["token"], contribution)
        return y[:num_tokens]


def slot_counts(F, slot_token, num_tokens: int):
    """Filled slots per expert: slot_token [E, C] -> [E] float32."""
    return F.sum(F.cast(slot_token < num_tokens, F.float32), 1)
