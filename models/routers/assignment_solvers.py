"""Balanced assignment solvers: every token to one expert, every expert exactly C tokens
(T = E * C), maximising sum_t scores[t, expert(t)]. Used by the balanced router.

- ``exact``: ``F.linear_sum_assignment`` on the T x (C * E) cost matrix in which each
  expert's column is repeated C times (scipy on the host, O(T^3); measured on this shared
  CPU with E = 8: 17 ms at T = 256, 0.13 s at T = 1024, 0.7 s at T = 2048).
- ``sinkhorn``: on device. Entropic transport plan of scores / temperature (log domain,
  rows sum to 1, columns to C, ``iterations`` alternating normalisations starting with the
  rows), rounded by letting experts 0, 1, ..., E-1 in turn take the C tokens with the
  highest plan values among those not yet taken. Always exactly balanced; approximates the
  exact optimum. Measured on Gumbel-perturbed log-probs (50 draws each), share of tokens
  given the exact solver's expert: temperature 0.1 / 50 iterations (the router's default)
  98.8% at T = 8, E = 4; 96.4% at T = 64, E = 8; 96.5% at T = 256, E = 16; temperature
  0.05 / 100 iterations 99.3%, 97.9%, 97.4% at twice the cost (MindSpore compiles the
  unrolled iterations: first train step 8 s at 50, 16 s at 100 iterations, T = 64).

Both are invariant to adding a constant to a token's row of scores (the exact optimum
because every token takes one expert; Sinkhorn because it starts with a row
normalisation): the balanced router's estimator relies on it.
"""
from __future__ import annotations

import math

SOLVERS = ("auto", "exact", "sinkhorn")


def exact_balanced_assignment(F, scores, capacity: int):
    """scores [..., T, E] -> expert [..., T] (index dtype) of the optimal balanced assignment."""
    lead, num_tokens, num_experts = tuple(scores.shape[:-2]), scores.shape[-2], scores.shape[-1]
    repeated = F.expand_dims(scores, -2) * F.ones(lead + (num_tokens, capacity, num_experts), F.float32)
    cost = -F.reshape(repeated, lead + (num_tokens, capacity * num_experts))
    return F.linear_sum_assignment(F.stop_gradient(cost)) % num_experts


def sinkhorn_log_plan(F, scores, capacity: int, temperature: float, iterations: int):
    """log of the entropic plan [..., T, E]: rows sum to 1, columns to C (approximately
    for the columns after finitely many iterations)."""
    log_plan = F.stop_gradient(scores) / temperature
    log_capacity = math.log(capacity)
    for _ in range(iterations):
        log_plan = log_plan - F.expand_dims(F.logsumexp(log_plan, -1), -1)
        log_plan = log_plan - F.expand_dims(F.logsumexp(log_plan, -2), -2) + log_capacity
    return log_plan - F.expand_dims(F.logsumexp(log_plan, -1), -1)


def fill_experts_in_turn(F, plan, capacity: int):
    """Round plan [..., T, E] to a balanced assignment: expert 0, 1, ... in turn takes the C
    tokens with the largest plan values among those not taken -> expert [..., T]."""
    num_tokens, num_experts = plan.shape[-2], plan.shape[-1]
    taken = F.zeros(plan.shape[:-1], F.float32)
    expert = F.zeros(plan.shape[:-1], F.float32)
    for e in range(num_experts):
        _, chosen = F.topk(plan[..., e] - taken * 1e9, capacity)
        mask = F.sum(F.one_hot(chosen, num_tokens, F.float32), -2)
        taken = taken + mask
        expert = expert + mask * e
    return F.cast(expert, F.index_dtype)


def balanced_assignment(F, scores, capacity: int, solver: str, temperature: float, iterations: int):
    """scores [..., T, E] -> expert [..., T] with every expert exactly ``capacity`` tokens;
    ``solver`` is ``exact`` or ``sinkhorn`` (resolved from ``auto`` by the caller)."""
    if solver == "exact":
        return exact_balanced_assignment(F, scores, capacity)
    plan = sinkhorn_log_plan(F, scores, capacity, temperature, iterations)
    return fill_experts_in_turn(F, plan, capacity)
