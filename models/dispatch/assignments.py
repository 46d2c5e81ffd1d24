"""Flattening a routing into a list of (token, expert, weight) assignments."""
from __future__ import annotations


def flatten_assignments(F, expert_index, expert_weight):
    """[T, k] routing -> slot-major lists of length k*T: all first choices, then all second
    choices, ... (GShard priority: a token's first choice outranks anyone's second).
    Returns (token [kT], expert [kT], both index dtype; weight [kT] float32)."""
    num_tokens, k = expert_index.shape
    expert = F.reshape(F.transpose(F.cast(expert_index, F.index_dtype), (1, 0)), (k * num_tokens,))
    weight = F.reshape(F.transpose(expert_weight, (1, 0)), (k * num_tokens,))
    token = F.arange(k * num_tokens, F.index_dtype) % num_tokens
    return token, expert, weight


def scalar(F, value, dtype):
    """A 0-d tensor, for ``F.where`` branches."""
    return F.ones((), dtype) * value
