"""LocMoE router (Li et al. 2024, arXiv 2401.13920): top-1 with a locality loss.

Gate (``router_options.gate``), Eq. 2-4 of the paper, G_i = ReLU(w_i . x + eps_i):
- ``grap_relu`` (default, the paper's gate): w_i . x taken from the GrAP layer, i.e. the mean
  of the i-th contiguous d/n slice of x (fixed orthogonal w_i = (n/d) 1[i d/n <= j < (i+1) d/n],
  the assumption of Theorem 1), and eps [n] a learned per-expert bias (initialised to 0):
  G_i = ReLU(GrAP(x)_i + eps_i);
- ``learned`` (ablation): a trained dense gate, W [d, n] (Switch init) and the same eps; its
  w_i are not orthogonal, so Theorem 1's assumption does not hold;
- ``grap`` (ablation): bare GrAP, G_i = GrAP(x)_i (no ReLU, no eps, no parameters).
p = softmax(G) in float32; each token goes to argmax p with weight = that probability. Ties
are frequent with ReLU (a token with every w_i . x + eps_i <= 0 has G = 0, and training can
push most tokens there): they are broken by the pre-activation, so the token goes to
argmax_i (w_i . x + eps_i), which is argmax p whenever that is unique. (Breaking them by
index sent every such token to expert 0: 53% drops at cf 1 in scripts/capacity_experiment.py.)
Losses: Switch balance (``moe.balance_loss_coef``, 0.01 as in the paper) and the locality loss
``models.locality`` (mu = ``router_options.locality_coef``) over ``router_options.topology``.

Capacity (with ``moe.dispatch: capacity``): every virtual device sends at most
ec = ceil(T * cf / (ep * n)) tokens to each expert (``models.dispatch.device_slots``).
``capacity_policy: bound`` (default) sets cf to Theorem 1's ec_min = 1 / (n p_delta)
(``models.capacity_bound``) with delta = ``router_options.delta`` if given, else the mean
cosine between the first training batch's tokens and their expert's gate vector (aux
``affinity_delta``), fixed from then on; until that first measurement, ``moe.capacity_factor``.
``capacity_policy: factor`` keeps ``moe.capacity_factor``. With ``moe.dispatch: dropless``
nothing is dropped and the capacity is not used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from core.params import ParamSpec, constant_init, truncated_normal_init
from core.rules import number, one_of, optional, setting
from models.capacity_bound import capacity_bound
from models.dispatch.device_slots import device_capacity_slots
from models.losses import switch_balance_loss
from models.routers.context import RoutingContext
from models.routers.locality_router import NORM_FLOOR, LocalityOptions, LocalityRouter, grap_affinity, grap_logits
from models.routers.registry import register_router

GATES = ("grap_relu", "learned", "grap")


@dataclass
class LocMoEOptions(LocalityOptions):
    gate: str = setting("grap_relu", one_of(*GATES))
    delta: Optional[float] = setting(None, optional(number(0.0, low_open=True, high=1.0, high_open=True,
                                                          noun="a cosine")))


@register_router("locmoe")
class LocMoERouter(LocalityRouter):
    Options = LocMoEOptions
    measured_key = "affinity_delta"
    top1_only = True

    def setup(self) -> None:
        super().setup()
        if self.options.gate != "learned":
            self.check_grap(f"moe.router_options.gate={self.options.gate}")

    @property
    def fills_slots(self) -> bool:
        """Capacity dispatch fills slots per (device, expert) itself; dropless uses the layer's."""
        return self.config.dispatch == "capacity"

    def configured_delta(self) -> Optional[float]:
        return self.options.delta

    def bound(self, delta: float) -> float:
        return capacity_bound(delta, self.config.d_model, self.config.num_experts)

    def weight_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        gate = self.options.gate
        if gate == "grap":
            return {}
        bias = {"bias": ParamSpec((c.num_experts,), constant_init(0.0))}
        if gate == "grap_relu":
            return bias
        return {"weight": ParamSpec((c.d_model, c.num_experts), truncated_normal_init(c.router_std)), **bias}

    def gate(self, F, params: dict, x):
        """x [T, d] -> (logits G [T, n], selection scores [T, n] whose argmax is the expert,
        cosine of x with every gate vector w_i [T, n])."""
        n = self.config.num_experts
        if self.options.gate == "learned":
            weight = self.param(params, "weight")
            scores = F.matmul(x, weight)
            x_norm = F.sqrt(F.sum(x * x, -1, True) + NORM_FLOOR)
            w_norm = F.sqrt(F.sum(weight * weight, 0, True) + NORM_FLOOR)
            cosine = scores / (x_norm * w_norm)
        else:
            scores, cosine = grap_logits(F, x, n), grap_affinity(F, x, n)
            if self.options.gate == "grap":
                return scores, scores, cosine
        pre = scores + self.param(params, "bias")
        return F.relu(pre), pre, cosine

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        c = self.config
        num_tokens = x.shape[0]
        logits, selection, cosine = self.gate(F, params, x)
        probs = F.softmax(logits, -1)
        _, index = F.topk(selection, 1)
        weight = F.take_along_axis(probs, index, 1)
        assignment = F.one_hot(index[:, 0], c.num_experts, F.float32)
        losses = {"balance": switch_balance_loss(F, probs, index, c.num_experts, self.parallel)}
        stats = {"affinity_delta": F.stop_gradient(F.mean(F.sum(cosine * assignment, -1)))}
        if self.locality_coef > 0:
            losses["locality"] = self.locality(F, probs)
        if self.topology is not None:
            stats["own_node_share"] = self.node_share(F, assignment)
        if not self.fills_slots:
            return {"logits": logits, "probs": probs, "expert_index": index, "expert_weight": weight,
                    "losses": losses, "stats": stats}
        ranges = self.device_ranges(num_tokens)
        slot_token, slot_weight = device_capacity_slots(F, index[:, 0], weight[:, 0], c.num_experts, ranges,
                                                        self.capacity_per_device(self.batch_tokens(num_tokens)))
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "requested_assignments": F.ones((), F.float32) * num_tokens, "losses": losses, "stats": stats}
