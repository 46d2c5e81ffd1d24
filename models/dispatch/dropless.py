"""Dropless dispatch (MegaBlocks-style): assignments sorted by expert, no padding, no
drops; experts run as one grouped matmul per weight matrix over the sorted rows.

Null experts (AdaMoE, ``num_slots > num_experts``) output 0, so their assignments add
nothing: the plan cuts them off after the sort, before any row is gathered, and keeps
N = (true assignments) + 1 rows (at most kT). The one null row kept makes N >= 1 when every
assignment is null; like any row past sum(tokens_per_expert) its expert output is 0. N is
data-dependent: a tensor-valued slice bound (a host read on torch, a dynamic shape under
MindSpore GRAPH_MODE). Without null experts N = kT, a static shape, and nothing changes.
"""
from __future__ import annotations

from models.dispatch.assignments import flatten_assignments, scalar


def dropless_plan(F, expert_index, expert_weight, num_experts: int, num_slots: int) -> dict:
    """Assignments sorted by expert (stable), null assignments last and, with null experts,
    all but one cut off (module docstring). Returns token, weight [N] in sorted order and
    tokens_per_expert [E] (index dtype)."""
    token, expert, weight = flatten_assignments(F, expert_index, expert_weight)
    key = F.where(expert < num_experts, expert, scalar(F, num_experts, F.index_dtype))
    order = F.argsort(key)
    counts = F.sum(F.one_hot(expert, num_slots, F.index_dtype), 0)[:num_experts]
    token, weight = F.gather_rows(token, order), F.gather_rows(weight, order)
    if num_slots > num_experts:
        rows = F.minimum(F.sum(counts) + 1, scalar(F, token.shape[0], F.index_dtype))
        token, weight = token[:rows], weight[:rows]
    return {"token": token, "weight": weight, "tokens_per_expert": counts}


def dropless_moe(F, params: dict, x, plan: dict, experts):
    """x [T, d] -> y [T, d] = sum over assignments of weight * expert(x)."""
    num_tokens, d = x.shape
    rows = F.gather_rows(x, plan["token"])
    out = experts.grouped(F, params, rows, plan["tokens_per_expert"])
    contribution = out * F.expand_dims(F.cast(plan["weight"], x.dtype), -1)
    return F.index_add(F.zeros((num_tokens, d), x.dtype), plan["token"], contribution)
