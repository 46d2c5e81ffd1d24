"""The MoE layer, written once: route -> dispatch -> experts -> combine.

``MoELayer`` is a framework-free component: it lists its parameters (``param_specs``) and
computes with any backend's op vocabulary ``F`` (``forward``). Backend shells
(backends/torch_shell.py, backends/mindspore_shell.py) hold the parameters.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

from core.errors import ConfigError
from core.layout import ExpertParallel, check_experts
from core.params import ParamSpec
from models.dispatch.capacity import capacity_moe, capacity_plan
from models.dispatch.dropless import dropless_moe, dropless_plan
from models.dispatch.expert_parallel import ExpertParallelExperts
from models.dispatch.slots import slot_counts, slot_moe
from models.experts import Experts
from models.metrics import routing_metrics, true_assignment_count
from models.moe_config import MoEConfig
from models.routers import router_class
from models.shared_expert import SharedExpert


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

    Stochastic routers (skip, balanced) take optional ``routing_noise`` (shaped like the
    input's token axes plus a last axis the router names; U[0, 1) values, drawn with
    ``F.uniform`` when not given) so that runs reproduce across frameworks, and return
    ``aux["routing_log_prob"]`` [T]: add sum_t stop_gradient(loss_t - baseline) *
    routing_log_prob[t] to the loss for the score-function part of their gradient
    estimator (loss_t = token t's downstream loss; see models/routers/skip.py).

    ``parallel`` (multi-process runs, ``core.layout.ExpertParallel``): this rank holds
    num_experts / ep experts and reaches the others by all-to-all
    (``models.dispatch.expert_parallel``); router statistics are reduced over the global
    batch. Each rank routes and combines its own tokens.
    """

    def __init__(self, config: MoEConfig, prefix: str = "", layer_index: int = 0,
                 parallel: Optional[ExpertParallel] = None) -> None:
        """``layer_index``: the model layer this MoE layer sits in (seeds per-layer router state)."""
        self.config = config.validate()
        self.parallel = parallel
        self.router = router_class(config.router)(config, prefix + "router.")
        self.router.layer_index = layer_index
        self.experts = Experts(config, prefix + "experts.")
        self.shared_expert = SharedExpert(config, prefix) if config.shared_expert_hidden else None
        if parallel is not None and parallel.size > 1:
            check_experts(config.num_experts, parallel.size)
            self.experts = ExpertParallelExperts(self.experts, parallel)
            self.router.bind_parallel(parallel)

    def param_specs(self) -> Dict[str, ParamSpec]:
        shared = self.shared_expert.param_specs() if self.shared_expert is not None else {}
        return {**self.router.param_specs(), **self.experts.param_specs(), **shared}

    def check_inputs(self, x, token_ids=None, domain_ids=None, routing_noise=None) -> None:
        """Shape checks, run by the shells before any (compiled) compute."""
        shape = tuple(x.shape)
        if len(shape) < 2 or shape[-1] != self.config.d_model:
            raise ConfigError(f"MoE input has shape {shape}: its last axis must be moe.d_model={self.config.d_model}")
        given = {"token_ids": token_ids, "domain_ids": domain_ids}
        for name in self.router.needs_context:
            if given[name] is None:
                raise ConfigError(f"moe.router={self.router.name!r} needs {name} with every batch; none were given")
            if tuple(given[name].shape) != shape[:-1]:
                raise ConfigError(f"{name} has shape {tuple(given[name].shape)}; expected {shape[:-1]} (the input's token axes)")
        self.router.check_context(given)
        self.router.check_noise(math.prod(shape[:-1]), routing_noise)

    def forward(self, F, params: dict, x, token_ids=None, domain_ids=None, routing_noise=None):
        c = self.config
        shape = x.shape
        tokens = F.reshape(x, (-1, c.d_model))
        num_tokens = tokens.shape[0]
        if routing_noise is not None:
            routing_noise = F.reshape(routing_noise, (num_tokens, routing_noise.shape[-1]))
        context = {"token_ids": token_ids, "domain_ids": domain_ids, "routing_noise": routing_noise,
                   "parallel": self.parallel}
        routing = self.router.route(F, params, F.cast(tokens, F.float32), context)
        if "slot_token" in routing:
            y = slot_moe(F, params, tokens, routing["slot_token"], routing["slot_weight"], self.experts,
                         routing.get("slot_grad_scale"))
            tokens_per_expert = slot_counts(F, routing["slot_token"], num_tokens)
            requested = routing["requested_assignments"]
            expert_rows = F.ones((), F.float32) * (routing["slot_token"].shape[0] * routing["slot_token"].shape[1])
        elif c.dispatch == "capacity":
            capacity = c.capacity(num_tokens)
            plan = capacity_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts,
                                 c.num_slots, capacity, c.drop_policy)
            y = capacity_moe(F, params, tokens, plan, self.experts, c.num_experts, capacity)
            tokens_per_expert = plan["tokens_per_expert"]
            requested = true_assignment_count(F, routing["expert_index"], c.num_experts)
            expert_rows = F.ones((), F.float32) * (c.num_experts * capacity)
        else:
            plan = dropless_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts, c.num_slots)
            y = dropless_moe(F, params, tokens, plan, self.experts)
            tokens_per_expert = plan["tokens_per_expert"]
            requested = true_assignment_count(F, routing["expert_index"], c.num_experts)
            expert_rows = F.sum(tokens_per_expert)
        aux = routing_metrics(F, num_tokens, requested, tokens_per_expert, expert_rows, self.experts.flops_per_row)
        if self.shared_expert is not None:
            y = y + self.shared_expert.forward(F, params, tokens)
            aux["expert_flops"] = aux["expert_flops"] + float(num_tokens * self.shared_expert.flops_per_token)
        aux.update(self.experts.traffic_metrics(F))
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
