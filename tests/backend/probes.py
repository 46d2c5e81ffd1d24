"""Test-only components that expose a piece of the layer to the harness (which runs any
``param_specs`` + ``forward`` component on a backend): the router alone, and the capacity
plan alone on a routing given as numbers."""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec
from models.dispatch.capacity import capacity_plan
from models.routers.context import routing_context


class RouterProbe:
    """forward(x [T, d]) -> (expert_weight [T, k], {expert_index, logits, probs, <loss>_loss})."""

    def __init__(self, router) -> None:
        self.router = router

    def param_specs(self) -> Dict[str, ParamSpec]:
        return self.router.param_specs()

    def check_inputs(self, x) -> None:
        pass

    def forward(self, F, params: dict, x):
        routing = self.router.route(F, params, x, routing_context())
        aux = {"expert_index": F.cast(routing["expert_index"], F.float32),
               "logits": routing["logits"], "probs": routing["probs"]}
        for name, value in routing["losses"].items():
            aux[name + "_loss"] = value
        return routing["expert_weight"], aux


class CapacityProbe:
    """forward(routing [T, 2k]: k expert ids (as floats) then k weights) -> (dest [kT],
    {token, kept, weight [kT], tokens_per_expert [E]}) from ``capacity_plan``."""

    def __init__(self, num_experts: int, num_slots: int, top_k: int, capacity: int, drop_policy: str) -> None:
        self.args = (num_experts, num_slots, capacity, drop_policy)
        self.top_k = top_k

    def param_specs(self) -> Dict[str, ParamSpec]:
        return {}

    def check_inputs(self, routing) -> None:
        pass

    def forward(self, F, params: dict, routing):
        k = self.top_k
        num_experts, num_slots, capacity, drop_policy = self.args
        index = F.cast(routing[:, :k], F.index_dtype)
        plan = capacity_plan(F, index, routing[:, k:], num_experts, num_slots, capacity, drop_policy)
        aux = {"token": F.cast(plan["token"], F.float32), "kept": F.cast(plan["kept"], F.float32),
               "weight": plan["weight"], "tokens_per_expert": F.cast(plan["tokens_per_expert"], F.float32)}
        return F.cast(plan["dest"], F.float32), aux
