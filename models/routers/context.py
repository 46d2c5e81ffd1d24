"""A router's per-batch side inputs, travelling as one value from the model to the router."""
from __future__ import annotations

from typing import Any, TypedDict


class RoutingContext(TypedDict):
    """What a router may read besides the tokens x [T, d] (each entry None when not given):

    - ``token_ids``, ``domain_ids``: integer tensors shaped like the input's token axes
      (hash and RRE tables; list them in ``Router.needs_context``);
    - ``routing_noise``: U[0, 1) values, the input's token axes plus a last axis of the width
      a stochastic router names (drawn with ``F.uniform`` inside when None).

    A plain dict at run time, built by ``routing_context``: MindSpore compiles a dict built by
    a function, while an object built inside compiled code (dataclass, NamedTuple, class
    instance) becomes a Python call that stops gradients (MindSpore 2.10, measured under
    GRAPH_MODE and ``ms.jit``: every gradient of the graph came back zero). The layer's
    expert-parallel place is not a per-batch input: the router gets it once, at
    construction (``Router.parallel``)."""

    token_ids: Any
    domain_ids: Any
    routing_noise: Any


def routing_context(token_ids: Any = None, domain_ids: Any = None, routing_noise: Any = None) -> RoutingContext:
    """The context of one batch (see ``RoutingContext``)."""
    return {"token_ids": token_ids, "domain_ids": domain_ids, "routing_noise": routing_noise}
