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
from models.metrics import true_assignment_count
from models.moe_config import MoEConfig


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


class DroplessDispatcher:
    """``moe.dispatch: dropless`` for routers that give expert_index/expert_weight [T, k]:
    plan (``dropless_plan``) -> dispatch, the rows sorted by expert -> the experts, one grouped
    matmul per matrix -> combine, sum over assignments of weight * expert output."""

    def __init__(self, config: MoEConfig, experts) -> None:
        self.config = config
        self.experts = experts

    def plan(self, F, routing: dict, num_tokens: int) -> dict:
        c = self.config
        return dropless_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts, c.num_slots)

    def load(self, F, routing: dict, plan: dict, num_tokens: int) -> tuple:
        """(true assignments requested, tokens_per_expert [E], expert rows computed = their sum)."""
        return (true_assignment_count(F, routing["expert_index"], self.config.num_experts),
                plan["tokens_per_expert"], F.sum(plan["tokens_per_expert"]))

    def dispatch(self, F, x, plan: dict):
        """x [T, d] -> rows [N, d] sorted by expert."""
        return F.gather_rows(x, plan["token"])

    def run_experts(self, F, params: dict, rows, plan: dict):
        return self.experts.grouped(F, params, rows, plan["tokens_per_expert"])

    def combine(self, F, out, plan: dict, x):
        """out [N, d] -> y [T, d] = sum over assignments of weight * expert(x)."""
        num_tokens, d = x.shape
        contribution = out * F.expand_dims(F.cast(plan["weight"], x.dtype), -1)
        return F.index_add(F.zeros((num_tokens, d), x.dtype), plan["token"], contribution)
