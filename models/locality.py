"""LocMoE locality loss (Li et al. 2024) and the own-node share, on the op vocabulary ``F``.

For node j with tokens T_j (its virtual devices' contiguous chunks, ``core.topology``):

- D_c^j = mean over t in T_j of the router distribution p_t (soft, so the loss has gradients);
- D_l^j = the fully localised distribution: 1/m on the m experts living on node j, 0 elsewhere.

L_loc = mean over nodes (with tokens) of a divergence between them (coefficient mu applied
by the layer). The papers leave the exact form OPEN; two finite choices
(``router_options.locality_divergence``):

- ``forward`` (default): KL(D_c || D_l^eps) with D_l^eps = (1 - eps) D_l + eps / n
  (``router_options.locality_epsilon``, default 0.01): the paper's direction, smoothed so
  that mass on remote experts costs log(D_c / (eps / n)) instead of infinity;
- ``reverse``: KL(D_l || D_c) = -log m - (1/m) sum_{i on node j} log D_c^j[i]: finite
  without smoothing (D_c > 0), pushes mass onto every local expert.

Evidence (scripts/locality_experiment.py: tiny LocMoE layer, 2 virtual nodes, domain-sharded
synthetic data, 40 steps, torch, mean of 3 seeds): own-node share at mu = 0 / 0.01 / 0.03 / 0.1
is 0.51 / 0.68 / 0.82 / 0.82 with ``forward`` (eps 0.01; eps 0.001 alike, eps 0.1 needs mu 0.1)
and 0.51 / 0.48 / 0.68 / 0.82 with ``reverse``; ~0.82 is what the gate can separate on that data,
and the task MSE does not get worse (0.186 at mu = 0, 0.164-0.175 with the loss). ``forward``
reaches the plateau at a 3x smaller mu, hence the defaults: forward, eps 0.01, mu 0.03
(``DEFAULT_LOCALITY_COEF``).
"""
from __future__ import annotations

import math

from core.topology import Topology

DIVERGENCES = ("forward", "reverse")
TINY = 1e-30


def node_divergence(F, d_c, topology: Topology, node: int, divergence: str = "forward", epsilon: float = 0.01):
    """The divergence between node ``node``'s mean router distribution d_c [n] and D_l^node."""
    n, m = topology.num_experts, topology.experts_per_node
    d_c = F.clip(d_c, TINY, 1.0)
    first, last = topology.node_experts(node)
    if divergence == "forward":
        local_weight = math.log((1.0 - epsilon) / m + epsilon / n)
        remote_weight = math.log(epsilon / n)
        local_mass = F.sum(d_c[first:last])
        remote_mass = F.sum(d_c) - local_mass
        return F.sum(d_c * F.log(d_c)) - local_weight * local_mass - remote_weight * remote_mass
    return -math.log(m) - F.mean(F.log(d_c[first:last]))


def locality_loss(F, probs, topology: Topology, divergence: str = "forward", epsilon: float = 0.01):
    """probs [T, n] float32 (rows sum to 1) -> scalar L_loc (without mu), the batch's tokens
    on the topology's virtual nodes."""
    num_tokens = probs.shape[0]
    total = F.zeros((), F.float32)
    nodes = 0
    for node, (start, end) in enumerate(topology.node_token_ranges(num_tokens)):
        if end == start:
            continue
        total = total + node_divergence(F, F.mean(probs[start:end], 0), topology, node, divergence, epsilon)
        nodes += 1
    return total / max(nodes, 1)


def rank_locality_loss(F, probs, topology: Topology, node: int, node_group, node_ranks: int,
                       divergence: str = "forward", epsilon: float = 0.01):
    """L_loc term of one rank of a multi-process run, whose tokens probs [T, n] all live on
    ``node``: D_c is the node's mean over its ``node_ranks`` ranks (all-reduced over
    ``node_group``, no gradient) plus this rank's part with its gradient at full weight. The
    ranks' losses average to the single-process L_loc over the same tokens, and their
    data-parallel averaged gradients to its gradient."""
    mine = F.mean(probs, 0)
    d_c = mine
    if node_ranks > 1:
        d_c = F.all_reduce(F.stop_gradient(mine), node_group) * (1.0 / node_ranks) + (mine - F.stop_gradient(mine))
    return node_divergence(F, d_c, topology, node, divergence, epsilon)


def own_node_share(F, assignment, topology: Topology, node=None):
    """Share of (token, expert) assignments whose expert lives on the token's home node:
    the virtual nodes' token chunks, or every token on ``node`` (one rank of a multi-process
    run). assignment [T, n] float32 (1 where token t is sent to expert i) -> scalar, no gradient."""
    assignment = F.stop_gradient(assignment)
    num_tokens = assignment.shape[0]
    ranges = topology.node_token_ranges(num_tokens) if node is None else [
        (0, num_tokens) if j == node else (0, 0) for j in range(topology.num_nodes)]
    local = F.zeros((), F.float32)
    for j, (start, end) in enumerate(ranges):
        if end > start:
            first, last = topology.node_experts(j)
            local = local + F.sum(assignment[start:end, first:last])
    return local / F.maximum(F.sum(assignment), F.ones((), F.float32))
