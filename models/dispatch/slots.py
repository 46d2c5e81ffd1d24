"""Dispatch for routers that fill expert slots themselves (expert choice, balanced
assignment, skip estimator, LocMoE+ expert choice): each of the E experts has C slots,
``slot_token`` [E, C] names the token in each slot (T = empty) and ``slot_weight`` [E, C]
its combine weight."""
from __future__ import annotations


def slot_moe(F, params: dict, x, slot_token, slot_weight, experts, slot_grad_scale=None):
    """x [T, d] -> y [T, d] = sum over filled slots of weight * expert(x).
    ``slot_grad_scale`` [E, C] (optional) multiplies the gradient, not the value, of each
    slot's contribution: importance weights of unbiased estimators (models/routers/skip.py)."""
    num_tokens, d = x.shape
    num_experts, capacity = slot_token.shape
    token = F.reshape(F.cast(slot_token, F.index_dtype), (num_experts * capacity,))
    padded = F.concat([x, F.zeros((1, d), x.dtype)], 0)
    expert_in = F.reshape(F.gather_rows(padded, token), (num_experts, capacity, d))
    expert_out = F.reshape(experts.batched(F, params, expert_in), (num_experts * capacity, d))
    weight = F.cast(F.reshape(slot_weight, (num_experts * capacity,)), x.dtype)
    contribution = expert_out * F.expand_dims(weight, -1)
    if slot_grad_scale is not None:
        scale = F.cast(F.reshape(slot_grad_scale, (num_experts * capacity, 1)), x.dtype)
        value = F.stop_gradient(contribution)
        contribution = value + (contribution - value) * scale
    y = F.index_add(F.zeros((num_tokens + 1, d), x.dtype), token, contribution)
    return y[:num_tokens]


def slot_counts(F, slot_token, num_tokens: int):
    """Filled slots per expert: slot_token [E, C] -> [E] float32."""
    return F.sum(F.cast(slot_token < num_tokens, F.float32), 1)
