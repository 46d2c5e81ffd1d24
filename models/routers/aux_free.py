"""Auxiliary-loss-free load balancing (DeepSeek-V3, Liu et al. 2024).

s = sigmoid(x W) (``score: sigmoid``, default, as DeepSeek-V3) or softmax(x W) [T, E].
Selection uses biased scores, weights do not:
    index = top-k(s + b),  w = s[index]  (renormalised over the k when ``moe.renormalize``).
b [E] is a non-trainable parameter ``bias`` (init 0). No balance loss. After every step
``after_step`` nudges it against the observed load (``aux["tokens_per_expert"]``, summed
over data-parallel ranks by the trainer):
    b_i += u * sign(mean_j load_j - load_i),  u = ``bias_update_speed`` (DeepSeek-V3: 1e-3).
Sigmoid is the default because each expert's score is then independent of the others',
so the bias moves one expert's selection without rescaling the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from core.params import ParamSpec, constant_init
from core.rules import number, one_of, setting
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.routers.registry import register_router

SCORES = ("sigmoid", "softmax")


@dataclass
class AuxFreeOptions:
    score: str = setting("sigmoid", one_of(*SCORES, noun="scores"))
    bias_update_speed: float = setting(1e-3, number(0.0))


@register_router("aux_free")
class AuxFreeRouter(LinearGateRouter):
    Options = AuxFreeOptions
    null_experts = False

    def weight_specs(self) -> Dict[str, ParamSpec]:
        specs = super().weight_specs()
        specs["bias"] = ParamSpec((self.config.num_experts,), constant_init(0.0), trainable=False)
        return specs

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d] -> expert_index [T, k] chosen on s + b, expert_weight [T, k] from s alone."""
        logits = F.matmul(x, self.param(params, "weight"))
        scores = F.sigmoid(logits) if self.options.score == "sigmoid" else F.softmax(logits, -1)
        _, index = F.topk(F.stop_gradient(scores) + self.param(params, "bias"), self.config.top_k)
        weight = F.take_along_axis(scores, index, -1)
        if self.config.renormalize:
            weight = weight / F.sum(weight, -1, True)
        return {"logits": logits, "probs": scores, "expert_index": index, "expert_weight": weight, "losses": {}}

    def after_step(self, params: Dict[str, np.ndarray], aux: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """b_i += u * sign(mean load - load_i) from aux["tokens_per_expert"] [E]."""
        load = np.asarray(aux["tokens_per_expert"], np.float64)
        name = self.prefix + "bias"
        step = self.options.bias_update_speed * np.sign(load.mean() - load)
        return {name: (params[name] + step).astype(np.float32)}
