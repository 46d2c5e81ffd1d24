"""Dropless dispatch (MegaBlocks-style): assignments sorted by expert, no padding, no
drops; experts run as one grouped matmul per weight matrix over the sorted rows."""
from __future__ import annotations

from models.dispatch.assignments import flatten_assignments, scalar


def dropless_plan(F, expert_index, expert_weight, num_experts: int, num_slots: int) -> dict:
    """Assignments sorted by expert (stable), null assignments last.
    Returns token, weight [kT] in sorted order and tokens_per_expert [E] (index dtype)."""
    token, expert, weight = flatten_assignments(F, expert_index, expert_weight)
    key = F.where(expert < num_experts, expert, scalar(F, num_experts, F.index_dtype))
    order = F.argsort(key)
    counts = F.sum(F.one_hot(expert, num_slots, F.index_dtype), 0)[:num_experts]
    return {"token": F.gather_rows(token, order), "weight": F.gather_rows(weight, order),
            "tokens_per_expert": counts}


def dropless_moe(F, params: dict, x, plan: dict, experts):
    """x [T, d] -> y [T, d] = sum over assignments of weight * expert(x)."""
    num_tokens, d = x.shape
    rows = F.gather_rows(x, plan["token"])
    out = experts.grouped(F, params, rows, plan["tokens_per_expert"])
    contribution = out * F.expand_dims(F.cast(plan["weight"], x.dtype), -1)
    return F.index_add(F.zeros((num_tokens, d), x.dtype), plan["token"], contribution)
