"""Capacity-limited dispatch (GShard/Switch): each true expert takes at most C assignments;
the rest are dropped (their slot contributes 0, so a token with every slot dropped passes
through the residual unchanged). Buffers are [E, C, d], computed with one bmm per matrix."""
from __future__ import annotations

from models.dispatch.assignments import flatten_assignments, scalar
from models.metrics import true_assignment_count
from models.moe_config import MoEConfig


def capacity_plan(F, expert_index, expert_weight, num_experts: int, num_slots: int,
                  capacity: int, drop_policy: str) -> dict:
    """Where each assignment goes. ``drop_policy``: ``position`` keeps the earliest
    assignments in slot-major order; ``probability`` keeps those with the largest weight.
    Returns token, weight, kept [kT] and dest [kT] (row e*C + position, or the dummy row
    E*C for dropped and null assignments)."""
    token, expert, weight = flatten_assignments(F, expert_index, expert_weight)
    if drop_policy == "probability":
        order = F.argsort(weight, descending=True)
        token, expert, weight = F.gather_rows(token, order), F.gather_rows(expert, order), F.gather_rows(weight, order)
    mask = F.one_hot(expert, num_slots, F.index_dtype)[:, :num_experts]
    position = F.sum((F.cumsum(mask, 0) - 1) * mask, 1)
    kept = (expert < num_experts) & (position < capacity)
    dest = F.where(kept, expert * capacity + position, scalar(F, num_experts * capacity, F.index_dtype))
    kept_mask = F.cast(mask, F.float32) * F.expand_dims(F.cast(kept, F.float32), -1)
    return {"token": token, "weight": weight, "kept": kept, "dest": dest,
            "tokens_per_expert": F.sum(kept_mask, 0)}


class CapacityDispatcher:
    """``moe.dispatch: capacity`` for routers that give expert_index/expert_weight [T, k]:
    plan (``capacity_plan``) -> dispatch into buffers [E, C, d] -> the experts, one bmm per
    matrix -> combine, sum over kept assignments of weight * expert output."""

    def __init__(self, config: MoEConfig, experts) -> None:
        self.config = config
        self.experts = experts

    def plan(self, F, routing: dict, num_tokens: int) -> dict:
        c = self.config
        return capacity_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts, c.num_slots,
                             c.capacity(num_tokens), c.drop_policy)

    def load(self, F, routing: dict, plan: dict, num_tokens: int) -> tuple:
        """(true assignments requested, tokens_per_expert [E], expert rows computed = E * C)."""
        c = self.config
        return (true_assignment_count(F, routing["expert_index"], c.num_experts), plan["tokens_per_expert"],
                F.ones((), F.float32) * (c.num_experts * c.capacity(num_tokens)))

    def dispatch(self, F, x, plan: dict):
        """x [T, d] -> expert_in [E, C, d] (dropped and null assignments land on a cut-off row)."""
        num_tokens, d = x.shape
        num_experts, capacity = self.config.num_experts, self.config.capacity(num_tokens)
        rows = num_experts * capacity
        buffer = F.index_add(F.zeros((rows + 1, d), x.dtype), plan["dest"], F.gather_rows(x, plan["token"]))
        return F.reshape(buffer[:rows], (num_experts, capacity, d))

    def run_experts(self, F, params: dict, expert_in, plan: dict):
        return self.experts.batched(F, params, expert_in)

    def combine(self, F, expert_out, plan: dict, x):
        """expert_out [E, C, d] -> y [T, d] = sum over kept assignments of weight * expert(x)."""
        num_tokens, d = x.shape
        rows = expert_out.shape[0] * expert_out.shape[1]
        expert_out = F.concat([F.reshape(expert_out, (rows, d)), F.zeros((1, d), x.dtype)], 0)
        gate = F.cast(F.where(plan["kept"], plan["weight"], scalar(F, 0.0, F.float32)), x.dtype)
        contribution = F.gather_rows(expert_out, plan["dest"]) * F.expand_dims(gate, -1)
        return F.index_add(F.zeros((num_tokens, d), x.dtype), plan["token"], contribution)
