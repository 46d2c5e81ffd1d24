"""LocMoE+ router (Li et al. 2024, arXiv 2406.00023): affinity-driven token choice, then
expert choice under a capacity re-estimated from the measured affinity.

- Affinity delta_ti = cos(x_t, w_i) with the fixed GrAP weights (no router parameters);
  p = softmax(GrAP logits) gives the combine weights and the locality loss's D_c.
- Token choice (TCR): token t ranks experts by affinity and takes them, best first, until the
  cumulative share of its positive affinity, relu(delta_ti) / sum_j relu(delta_tj), reaches
  ``router_options.token_threshold``, at most ``moe.top_k`` experts; the best expert is always
  taken, an expert with affinity <= 0 never after it. The threshold is OPEN; default 0.5:
  in scripts/capacity_experiment.py (torch, top_k = n = 4, cf 1, 2 seeds) thresholds 0.3 /
  0.5 / 0.7 / 0.9 / 1.0 give 1.00 / 1.12 / 1.47 / 1.87 / 2.06 experts per token and drops
  0.07 / 0.13 / 0.32 / 0.46 / 0.52 for held-out MSE 0.212 / 0.212 / 0.210 / 0.211 / 0.210:
  0.5 keeps the work near top-1 while ambiguous tokens still get a second expert.
- Expert choice (ECR): expert i keeps the C tokens of highest affinity among those that chose
  it. Weight = p_ti, renormalised over the token's chosen experts when ``moe.renormalize``.
- Capacity C = ep * ceil(T * cf / (ep * n)) (at most T). ``capacity_policy: bound`` (default):
  cf = C_min = (1/n) exp(d delta_max^2 / (2 - delta_max^2)) (``models.capacity_bound``), with
  delta_max = the batch mean of each token's largest affinity (aux ``affinity_max``),
  re-estimated after the first step and then every ``router_options.capacity_interval`` (100)
  steps (host side, ``after_step``); ``moe.capacity_factor`` until the first estimate.
  A new C is a new static shape: a compiled step is rebuilt.
- Losses: Switch-style balance n * sum_i f_i P_i over the token-choice assignments
  (``moe.balance_loss_coef``) and the LocMoE locality loss.

Not causal (expert choice sees the whole batch).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError
from core.rules import integer, number, setting
from models.capacity_bound import large_d_capacity_bound
from models.losses import batch_total
from models.routers.context import RoutingContext
from models.routers.locality_router import LocalityOptions, LocalityRouter, grap_affinity, grap_logits
from models.routers.registry import register_router

EMPTY_SCORE = -2.0  # below any cosine: marks tokens that did not choose the expert


@dataclass
class LocMoEPlusOptions(LocalityOptions):
    token_threshold: float = setting(0.5, number(0.0, low_open=True, high=1.0))
    capacity_interval: int = setting(100, integer(1))  # steps


@register_router("locmoe_plus")
class LocMoEPlusRouter(LocalityRouter):
    Options = LocMoEPlusOptions
    measured_key = "affinity_max"
    causal = False
    fills_slots = True

    def setup(self) -> None:
        super().setup()
        c = self.config
        if c.top_k > c.num_experts:
            raise ConfigError(f"moe.top_k={c.top_k}: router 'locmoe_plus' takes at most "
                              f"moe.num_experts={c.num_experts} experts per token")
        self.check_grap("moe.router='locmoe_plus'")

    def refresh_every(self) -> int:
        return self.options.capacity_interval

    def bound(self, delta: float) -> float:
        return large_d_capacity_bound(delta, self.config.d_model, self.config.num_experts)

    def capacity(self, num_tokens: int) -> int:
        """C: slots per expert for a batch of ``num_tokens``."""
        devices = len(self.device_ranges(num_tokens))
        return min(num_tokens, devices * self.capacity_per_device(self.batch_tokens(num_tokens)))

    def token_choice(self, F, affinity):
        """TCR: affinity [T, n] -> chosen [T, n] float32 (1 = the token chose the expert)."""
        num_tokens, n = affinity.shape
        top, order = F.topk(affinity, self.config.top_k)
        positive = F.relu(affinity)
        total = F.maximum(F.sum(positive, -1, True), F.ones((), F.float32) * 1e-12)
        share = F.relu(top) / total
        before = F.cumsum(share, -1) - share
        keep = F.cast(before < self.options.token_threshold, F.float32) * F.cast(top > 0, F.float32)
        keep = F.concat([F.ones((num_tokens, 1), F.float32), keep[:, 1:]], 1)
        return F.sum(F.one_hot(order, n, F.float32) * F.expand_dims(keep, -1), 1)

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        c = self.config
        n = c.num_experts
        num_tokens = x.shape[0]
        affinity = grap_affinity(F, x, n)
        logits = grap_logits(F, x, n)
        probs = F.softmax(logits, -1)
        chosen = F.stop_gradient(self.token_choice(F, affinity))
        weight = probs * chosen
        if c.renormalize:
            weight = weight / F.sum(weight, -1, True)
        score = F.where(chosen > 0, affinity, F.ones((), F.float32) * EMPTY_SCORE)
        top, slot_token = F.topk(F.transpose(score, (1, 0)), self.capacity(num_tokens))
        filled = top > EMPTY_SCORE / 2
        slot_weight = F.take_along_axis(F.transpose(weight, (1, 0)), slot_token, 1)
        slot_weight = F.where(filled, slot_weight, F.zeros((), F.float32))
        slot_token = F.where(filled, slot_token, F.ones((), slot_token.dtype) * num_tokens)
        counts = batch_total(F, F.sum(chosen, 0), self.parallel)
        share = counts / F.sum(counts)
        losses = {"balance": n * F.sum(share * F.mean(probs, 0))}
        stats = {"affinity_max": F.stop_gradient(F.mean(F.max(affinity, -1)))}
        if self.locality_coef > 0:
            losses["locality"] = self.locality(F, probs)
        if self.topology is not None:
            stats["own_node_share"] = self.node_share(F, chosen)
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "requested_assignments": F.sum(chosen), "losses": losses, "stats": stats}
