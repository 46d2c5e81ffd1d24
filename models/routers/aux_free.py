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

DeepSeek-V3's router is this one with its options:
- ``n_group`` G, ``topk_group`` M: group-limited choice (``models.routers.expert_groups``):
  top-k of s + b only inside each token's M best of G expert groups (G = 1: no limit);
- ``routed_scaling_factor`` r: w = r * s[index] (after renormalisation), as DeepSeek-V3
  scales the routed experts' sum (2.5 in V3) before adding the shared expert;
- ``moe.renormalize``: DeepSeek-V3's ``norm_topk_prob``;
- ``sequence_balance_coef`` alpha: its complementary sequence-wise balance loss
  (``models.losses.sequence_balance_loss``, on s and the chosen experts, per sequence of the
  batch; 1e-4 in V3), reported as ``sequence_balance_loss``; needs the token ids' [B, S]
  shape, which the transformer always passes.
HF DeepSeek-V3's ``e_score_correction_bias`` is ``bias`` here, and its update rule (bias
update speed gamma, 1e-3 in the paper) is ``after_step`` with ``bias_update_speed`` = gamma;
HF's ``gate.weight`` [E, d] is ``weight`` [d, E] transposed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from core.errors import ConfigError
from core.params import ParamSpec, constant_init
from core.rules import integer, number, one_of, setting
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext
from models.losses import sequence_balance_loss
from models.routers.expert_groups import group_limited_choice
from models.routers.registry import register_router

SCORES = ("sigmoid", "softmax")


@dataclass
class AuxFreeOptions:
    score: str = setting("sigmoid", one_of(*SCORES, noun="scores"))
    bias_update_speed: float = setting(1e-3, number(0.0))
    n_group: int = setting(1, integer(1))
    topk_group: int = setting(1, integer(1))
    routed_scaling_factor: float = setting(1.0, number(0.0, low_open=True))
    sequence_balance_coef: float = setting(0.0, number(0.0))


@register_router("aux_free")
class AuxFreeRouter(LinearGateRouter):
    Options = AuxFreeOptions
    null_experts = False

    def setup(self) -> None:
        """Group-limited choice needs G | E, at least 2 experts per group, M <= G and k <= M E / G."""
        if self.options.sequence_balance_coef > 0:
            self.needs_context = ("token_ids",)  # their [B, S] shape tells where sequences end
        groups, kept, experts, k = self.options.n_group, self.options.topk_group, self.config.num_experts, self.config.top_k
        if groups == 1:
            if kept != 1:
                raise ConfigError(f"moe.router_options.topk_group={kept}: needs n_group > 1 (expert groups to keep)")
            return
        if experts % groups or experts // groups < 2:
            raise ConfigError(f"moe.router_options.n_group={groups}: must divide moe.num_experts={experts} into "
                              "groups of at least 2 experts")
        if kept > groups or k > kept * (experts // groups):
            raise ConfigError(f"moe.router_options.topk_group={kept}: must be at most n_group={groups} and keep at "
                              f"least moe.top_k={k} experts ({experts // groups} per group)")

    def loss_coefs(self) -> Dict[str, float]:
        return {"sequence_balance": self.options.sequence_balance_coef}

    def weight_specs(self) -> Dict[str, ParamSpec]:
        specs = super().weight_specs()
        specs["bias"] = ParamSpec((self.config.num_experts,), constant_init(0.0), trainable=False)
        return specs

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d] -> expert_index [T, k] chosen on s + b (inside the kept groups),
        expert_weight [T, k] from s alone, times ``routed_scaling_factor``."""
        o = self.options
        logits = F.matmul(x, self.param(params, "weight"))
        scores = F.sigmoid(logits) if o.score == "sigmoid" else F.softmax(logits, -1)
        choice = F.stop_gradient(scores) + self.param(params, "bias")
        if o.n_group > 1:
            choice = group_limited_choice(F, choice, o.n_group, o.topk_group)
        _, index = F.topk(choice, self.config.top_k)
        weight = F.take_along_axis(scores, index, -1)
        if self.config.renormalize:
            weight = weight / F.sum(weight, -1, True)
        if o.routed_scaling_factor != 1.0:
            weight = weight * o.routed_scaling_factor
        losses = {}
        if o.sequence_balance_coef > 0:
            ids = context["token_ids"]
            sequences = ids.shape[0] if len(ids.shape) > 1 else 1
            losses["sequence_balance"] = sequence_balance_loss(F, scores, index, self.config.num_experts, sequences)
        return {"logits": logits, "probs": scores, "expert_index": index, "expert_weight": weight, "losses": losses}

    def after_step(self, params: Dict[str, np.ndarray], aux: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """b_i += u * sign(mean load - load_i) from aux["tokens_per_expert"] [E]."""
        load = np.asarray(aux["tokens_per_expert"], np.float64)
        name = self.prefix + "bias"
        step = self.options.bias_update_speed * np.sign(load.mean() - load)
        return {name: (params[name] + step).astype(np.float32)}
