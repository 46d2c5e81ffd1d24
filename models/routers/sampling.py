"""Pieces shared by the stochastic routers (skip, balanced): their base class and score-term
options, their noise input, the slot layout of ``models.dispatch.slots`` filled from one
sampled expert per token, and the leave-one-out baseline of their score term."""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import ConfigError
from core.rules import FLAG, one_of, setting
from models.dispatch.assignments import scalar
from models.routers.base import LinearGateRouter
from models.routers.context import RoutingContext

BASELINES = ("none", "leave_one_out")


@dataclass
class ScoreTermOptions:
    """``correction``: the estimator's unbiasing weights (false: the naive, biased estimator,
    kept for comparison); ``baseline``: subtracted from each token's loss in the score term
    (``leave_one_out``: the mean loss of the batch's other tokens, see ``leave_one_out``)."""

    correction: bool = setting(True, FLAG)
    baseline: str = setting("none", one_of(*BASELINES, noun="baselines"))


class SampledRouter(LinearGateRouter):
    """A top-1 router that samples each token's expert from ``routing_noise`` [..., noise_width]
    and fills expert slots itself; not causal (a token's slot depends on the others)."""

    Options = ScoreTermOptions
    causal = False
    top1_only = True
    null_experts = False
    fills_slots = True
    noise_width = 1

    def check_noise(self, num_tokens: int, routing_noise) -> None:
        check_routing_noise(self.name, num_tokens, routing_noise, self.noise_width)


def check_routing_noise(router: str, num_tokens: int, noise, width: int) -> None:
    """``routing_noise`` must be the input's token axes plus a last axis of ``width``."""
    if noise is None:
        return
    shape = tuple(noise.shape)
    if len(shape) < 2 or shape[-1] != width or math.prod(shape[:-1]) != num_tokens:
        raise ConfigError(f"routing_noise has shape {shape}: router {router!r} needs the input's token axes "
                          f"({num_tokens} tokens) plus a last axis of {width}")


def leave_one_out(F, score):
    """score r [..., T] -> r'_t = (T r_t - sum_u r_u) / (T - 1), so that for any losses l
      sum_t l_t r'_t = sum_t (l_t - b_t) r_t,  b_t = mean_{u != t} l_u
    (the caller's score term sum_t stop_gradient(l_t) r_t then subtracts from each token's
    reward the mean of the other tokens' rewards). T = 1: r unchanged (no other token)."""
    num_tokens = score.shape[-1]
    if num_tokens < 2:
        return score
    total = F.sum(score, -1, True)
    return (score * float(num_tokens) - total) / float(num_tokens - 1)


def routing_uniforms(F, context: RoutingContext, num_tokens: int, width: int):
    """U[0, 1) noise [T, width]: the context's ``routing_noise`` (the input's token axes plus
    a last axis of ``width``) if given, else ``F.uniform``."""
    noise = context["routing_noise"]
    if noise is None:
        return F.uniform((num_tokens, width), F.float32)
    return F.cast(F.reshape(noise, (num_tokens, width)), F.float32)


def places_in_expert(F, expert, rank, num_experts: int):
    """How many tokens of the same expert come before each token in ``rank`` order.
    expert [..., T] (index dtype), rank [..., T] (a permutation of 0..T-1) -> [..., T]."""
    num_tokens = expert.shape[-1]
    key = F.cast(expert, F.index_dtype) * num_tokens + F.cast(rank, F.index_dtype)
    place = F.argsort(F.argsort(key))
    one_hot = F.one_hot(expert, num_experts, F.index_dtype)
    counts = F.sum(one_hot, -2)
    starts = F.cumsum(counts, -1) - counts
    return place - F.sum(one_hot * F.expand_dims(starts, -2), -1)


def fill_slots(F, expert, place, kept, weight, num_experts: int, capacity: int):
    """expert, place [T] (index dtype), kept [T] bool, weight [T] float32 (differentiable)
    -> slot_token [E, C] (index dtype, T = empty), slot_weight [E, C]: kept token t sits in
    slot (expert[t], place[t]) with its weight."""
    num_tokens = expert.shape[0]
    rows = num_experts * capacity
    dest = F.where(kept, F.cast(expert, F.index_dtype) * capacity + F.cast(place, F.index_dtype),
                   scalar(F, rows, F.index_dtype))
    token = F.cast(F.arange(num_tokens, F.index_dtype), F.float32) + 1.0
    filled = F.index_add(F.zeros((rows + 1,), F.float32), dest, token)[:rows] - 1.0
    slot_token = F.where(filled < 0, scalar(F, float(num_tokens), F.float32), filled)
    weight = F.where(kept, weight, scalar(F, 0.0, F.float32))
    slot_weight = F.index_add(F.zeros((rows + 1,), F.float32), dest, weight)[:rows]
    return (F.reshape(F.cast(slot_token, F.index_dtype), (num_experts, capacity)),
            F.reshape(slot_weight, (num_experts, capacity)))
