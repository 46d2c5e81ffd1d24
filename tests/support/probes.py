"""Test-only components that expose one piece of the MoE layer to the harness (which runs any
``param_specs`` + ``forward`` component on a backend): a layer's router alone, so tests can
read its routing tensors (expert_index, slot_weight, ...), and the capacity plan alone on a
routing given as numbers."""
from __future__ import annotations

from typing import Dict, Sequence

from core.params import ParamSpec
from models.dispatch.capacity import capacity_plan
from models.routers.context import routing_context


class RouterProbe:
    """forward(x [..., d], token_ids, domain_ids, routing_noise) -> (routing[output], aux):
    aux holds the routing tensors named in ``keys`` cast to float32, each router loss as
    ``<name>_loss`` and a zero ``loss`` (the harness adds it), so gradients flow from
    ``output`` only."""

    def __init__(self, layer, output: str = "expert_weight", keys: Sequence[str] = ()) -> None:
        self.layer = layer
        self.output = output
        self.keys = tuple(keys)

    def param_specs(self) -> Dict[str, ParamSpec]:
        return self.layer.router.param_specs()

    def check_inputs(self, *inputs, **context) -> None:
        self.layer.check_inputs(*inputs, **context)

    def forward(self, F, params: dict, x, token_ids=None, domain_ids=None, routing_noise=None):
        tokens = F.reshape(x, (-1, self.layer.config.d_model))
        routing = self.layer.router.route(F, params, tokens, routing_context(token_ids, domain_ids, routing_noise))
        aux = {key: F.cast(routing[key], F.float32) for key in self.keys}
        for name, value in routing["losses"].items():
            aux[name + "_loss"] = value
        aux["loss"] = F.zeros((), F.float32)
        return routing[self.output], aux


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
