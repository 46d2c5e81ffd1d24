"""A MoE layer's router run alone as a harness component, so tests can read its routing
tensors (expert_index, slot_weight, ...) on either backend."""
from __future__ import annotations

from typing import Sequence

from models.routers.context import routing_context


class RouterProbe:
    """forward(x [..., d], token_ids, domain_ids) -> (routing[output], aux): aux holds the
    routing tensors named in ``keys`` cast to float32 and a zero ``loss`` (the harness adds
    it), so gradients flow from ``output`` only."""

    def __init__(self, layer, output: str, keys: Sequence[str] = ()) -> None:
        self.layer = layer
        self.output = output
        self.keys = tuple(keys)

    def param_specs(self):
        return self.layer.router.param_specs()

    def check_inputs(self, *inputs, **context) -> None:
        self.layer.check_inputs(*inputs, **context)

    def forward(self, F, params: dict, x, token_ids=None, domain_ids=None):
        tokens = F.reshape(x, (-1, self.layer.config.d_model))
        routing = self.layer.router.route(F, params, tokens, routing_context(token_ids, domain_ids))
        aux = {key: F.cast(routing[key], F.float32) for key in self.keys}
        aux["loss"] = F.zeros((), F.float32)
        return routing[self.output], aux
