"""The expert-parallel all-to-all's traffic, counted once for the dispatch, the trainer's
logged bytes and the benchmarks (scripts/bench_expert_parallel.py, scripts/sim_cluster.py):
the rows one exchange sends, and the bytes such rows move in one training step.

A step's all-to-alls are the forward dispatch and combine (what the dispatch counts) and, in
backward, as many rows again; every row is ``d_model`` activations of the run's dtype.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np

ELEMENT_BYTES: Dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}  # run config dtype -> bytes


def traffic(counts: np.ndarray, me: int, nodes_of: Tuple[int, ...], hierarchy=None) -> Tuple[int, int]:
    """(rows this rank sends to other ranks, of which across nodes) for one exchange of
    ``counts`` [source, destination] rows over the EP group; ``nodes_of``: each EP rank's
    node; ``hierarchy`` (``core.layout.Hierarchy``, None: flat) as in
    ``parallel.all_to_all.hierarchical_all_to_all``."""
    if hierarchy is None:
        others = [j for j in range(counts.shape[0]) if j != me]
        return (int(sum(counts[me, j] for j in others)),
                int(sum(counts[me, j] for j in others if nodes_of[j] != nodes_of[me])))
    g = hierarchy.ranks_per_node
    nodes = counts.shape[0] // g
    a, i = divmod(me, g)
    by_rank = counts.reshape(nodes, g, nodes, g)
    inside = int(by_rank[a, i].sum() - by_rank[a, i, :, i].sum())  # phase A, to the other local ranks
    across = int(by_rank[a, :, :, i].sum() - by_rank[a, :, a, i].sum())  # phase B, rail i to other nodes
    return inside + across, across


def step_bytes(rows: float, d_model: int, element_bytes: int, world: int) -> float:
    """Bytes of one training step's all-to-alls over all ``world`` ranks, forward and
    backward, when each rank's forward dispatch + combine sends ``rows`` rows (the
    rank-averaged counter): rows x 2 x d_model x element_bytes x world."""
    return rows * (2.0 * d_model * element_bytes * world)


def traffic_bytes(metrics: Mapping[str, np.ndarray], d_model: int, element_bytes: int, world: int) -> Dict[str, float]:
    """A step's all-to-all bytes over all ranks inside nodes and across nodes (``step_bytes``),
    from the rank-averaged row counters ``a2a_sent_rows`` and ``a2a_cross_node_rows`` of
    ``models.dispatch.expert_parallel``; {} without them."""
    if "a2a_sent_rows" not in metrics:
        return {}
    across = step_bytes(float(metrics["a2a_cross_node_rows"]), d_model, element_bytes, world)
    return {"a2a_bytes_inside_nodes": step_bytes(float(metrics["a2a_sent_rows"]), d_model, element_bytes, world)
            - across, "a2a_bytes_across_nodes": across}


def messages(nodes: int, ranks_per_node: int, hierarchical: bool) -> Tuple[int, int]:
    """(messages, of which across nodes) of one exchange over an EP group of ``nodes`` x
    ``ranks_per_node`` ranks, every rank pair (flat) or every phase-A pair and rail (hierarchical)
    counted once. Flat: G (G - 1), G (G - g) across; hierarchical: G (g - 1) inside the nodes
    (phase A) + G (N - 1) along the rails (phase B), all of phase B across. G = N g ranks."""
    g, n = ranks_per_node, nodes
    ranks = n * g
    if not hierarchical:
        return ranks * (ranks - 1), ranks * (ranks - g)
    return ranks * (g - 1) + ranks * (n - 1), ranks * (n - 1)
