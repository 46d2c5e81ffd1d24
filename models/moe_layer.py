"""The MoE layer, written once: route -> dispatch -> experts -> combine.

``MoELayer`` is a framework-free component: it lists its parameters (``param_specs``) and
computes with any backend's op vocabulary ``F`` (``forward``, or ``apply`` with a
``models.routers.context.RoutingContext``). Backend shells
(backends/torch_shell.py, backends/mindspore_shell.py) hold the parameters.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

from core.errors import ConfigError
from core.layout import ExpertParallel, check_experts
from core.params import ParamSpec
from models.dispatch.capacity import CapacityDispatcher
from models.dispatch.dropless import DroplessDispatcher
from models.dispatch.expert_parallel import ExpertParallelExperts, exchange_compiles
from models.dispatch.slots import SLOT_DISPATCH, SlotDispatcher
from models.experts import Experts
from models.metrics import routing_metrics
from models.moe_config import MoEConfig
from models.routers import router_class
from models.routers.context import RoutingContext, routing_context
from models.shared_expert import SharedExpert

DISPATCHERS = {"capacity": CapacityDispatcher, "dropless": DroplessDispatcher, SLOT_DISPATCH: SlotDispatcher}


class MoELayer:
    """One MoE FFN block. forward: x [..., d] -> (y [..., d], aux).

    y is the experts' weighted sum only (no residual): a token whose every assignment was
    dropped, or that chose only null experts, gets y = 0 and so passes through the
    block's residual unchanged. With ``moe.shared_expert_hidden`` > 0 the shared expert's
    output is added after the combine (``models.shared_expert``; its FLOPs count in
    ``expert_flops``). ``aux`` holds ``loss`` (the weighted sum of router losses, to add to
    the task loss), each unweighted loss as ``<name>_loss``, the metrics of
    ``models.metrics.routing_metrics``, and the router's own scalar ``stats`` (if it returns
    any, e.g. LocMoE's ``own_node_share``), without gradient.

    The router's ``dispatch_mode`` picks the dispatcher (``DISPATCHERS``: capacity buffers,
    dropless grouped rows, or the slots a router filled itself); ``apply`` reads top to
    bottom as route -> plan -> dispatch -> experts -> combine.

    Stochastic routers (skip, balanced) take optional ``routing_noise`` (shaped like the
    input's token axes plus a last axis the router names; U[0, 1) values, drawn with
    ``F.uniform`` when not given) so that runs reproduce across frameworks, and return
    ``aux["routing_log_prob"]`` [T]: add sum_t stop_gradient(loss_t - baseline) *
    routing_log_prob[t] to the loss for the score-function part of their gradient
    estimator (loss_t = token t's downstream loss; see models/routers/skip.py).

    ``parallel`` (multi-process runs, ``core.layout.ExpertParallel``): this rank holds
    num_experts / ep experts and reaches the others by all-to-all
    (``models.dispatch.expert_parallel``); the router gets it at construction, and its
    statistics are reduced over the global batch. Each rank routes and combines its own
    tokens.
    """

    def __init__(self, config: MoEConfig, prefix: str = "", layer_index: int = 0,
                 parallel: Optional[ExpertParallel] = None) -> None:
        """``layer_index``: the model layer this MoE layer sits in (seeds per-layer router state)."""
        self.config = config.validate()
        self.router = router_class(config.router)(config, prefix + "router.", layer_index, parallel)
        self.experts = Experts(config, prefix + "experts.")
        self.shared_expert = SharedExpert(config, prefix) if config.shared_expert_hidden else None
        if parallel is not None and parallel.size > 1:
            check_experts(config.num_experts, parallel.size)
            self.experts = ExpertParallelExperts(self.experts, parallel)
        self.dispatcher = DISPATCHERS[self.router.dispatch_mode](config, self.experts)

    @property
    def exchanges_compile(self) -> bool:
        """Whether this layer's all-to-alls (none on one process) can run inside a compiled
        step (``models.dispatch.expert_parallel.exchange_compiles``)."""
        if not isinstance(self.experts, ExpertParallelExperts):
            return True
        return exchange_compiles(self.router.dispatch_mode, "flat" if self.experts.parallel.hierarchy is None
                                 else "hierarchical")

    def param_specs(self) -> Dict[str, ParamSpec]:
        shared = self.shared_expert.param_specs() if self.shared_expert is not None else {}
        return {**self.router.param_specs(), **self.experts.param_specs(), **shared}

    def static_key(self) -> tuple:
        """The router's host-side values that compiled code bakes in (``Router.static_key``)."""
        return self.router.static_key()

    def check_inputs(self, x, token_ids=None, domain_ids=None, routing_noise=None) -> None:
        """Shape checks, run by the shells before any (compiled) compute."""
        shape = tuple(x.shape)
        if len(shape) < 2 or shape[-1] != self.config.d_model:
            raise ConfigError(f"MoE input has shape {shape}: its last axis must be moe.d_model={self.config.d_model}")
        context = routing_context(token_ids, domain_ids, routing_noise)
        for name in self.router.needs_context:
            if context[name] is None:
                raise ConfigError(f"moe.router={self.router.name!r} needs {name} with every batch; none were given")
            if tuple(context[name].shape) != shape[:-1]:
                raise ConfigError(f"{name} has shape {tuple(context[name].shape)}; expected {shape[:-1]} (the input's token axes)")
        self.router.check_context(context)
        self.router.check_noise(math.prod(shape[:-1]), routing_noise)

    def forward(self, F, params: dict, x, token_ids=None, domain_ids=None, routing_noise=None):
        """The shells' entry: tensors positional (compiled functions take them one by one)."""
        return self.apply(F, params, x, routing_context(token_ids, domain_ids, routing_noise))

    def apply(self, F, params: dict, x, context: RoutingContext):
        """x [..., d] and the batch's side inputs -> (y [..., d], aux)."""
        shape = x.shape
        tokens = F.reshape(x, (-1, self.config.d_model))
        num_tokens = tokens.shape[0]
        routing = self.router.route(F, params, F.cast(tokens, F.float32), context)
        plan = self.dispatcher.plan(F, routing, num_tokens)
        expert_out = self.dispatcher.run_experts(F, params, self.dispatcher.dispatch(F, tokens, plan), plan)
        y = self.dispatcher.combine(F, expert_out, plan, tokens)
        requested, tokens_per_expert, expert_rows = self.dispatcher.load(F, routing, plan, num_tokens)
        aux = routing_metrics(F, num_tokens, requested, tokens_per_expert, expert_rows, self.experts.flops_per_row)
        if self.shared_expert is not None:
            y = y + self.shared_expert.forward(F, params, tokens)
            aux["expert_flops"] = aux["expert_flops"] + float(num_tokens * self.shared_expert.flops_per_token)
        aux.update(self.experts.traffic_metrics(F, expert_out))
        total = F.zeros((), F.float32)
        coefs = self.router.loss_coefs()
        for name, value in routing["losses"].items():
            aux[name + "_loss"] = value
            total = total + coefs[name] * value
        aux["loss"] = total
        for name, value in routing.get("stats", {}).items():
            aux[name] = F.stop_gradient(value)
        if "routing_log_prob" in routing:
            aux["routing_log_prob"] = routing["routing_log_prob"]
        return F.reshape(y, shape), aux
