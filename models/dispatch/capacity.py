"""Capacity-limited dispatch (GShard/Switch): each true expert takes at most C assignments;
the rest are dropped (their slot contributes 0, so a token with every slot dropped passes
through the residual unchanged). Buffers are [E, C, d], computed with one bmm per matrix."""
from __future__ import annotations

from models.dispatch.assignments import flatten_assignments, scalar


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


def capacity_moe(F, params: dict, x, plan: dict, experts, num_experts: int, capacity: int):
    """x [T, d] -> y [T, d] = sum over kept assignments of weight * expert(x)."""
    num_tokens, d = x.shape
    rows = num_experts * capacity
    buffer = F.index_add(F.zeros((rows + 1, d), x.dtype), plan["dest"], F.gather_rows(x, plan["token"]))
    expert_in = F.reshape(buffer[:rows], (num_experts, capacity, d))
    expert_out = F.reshape(experts.batched(F, params, expert_in), (rows, d))
    expert_out = F.concat([expert_out, F.zeros((1, d), x.dtype)], 0)
    gate = F.cast(F.where(plan["kept"], plan["weight"], scalar(F, 0.0, F.float32)), x.dtype)
    contribution = F.gather_rows(expert_out, plan["dest"]) * F.expand_dims(gate, -1)
    return F.index_add(F.zeros((num_tokens, d), x.dtype), plan["token"], contribution)
