"""The expert-parallel all-to-all, flat or hierarchical (locality-aware), written once on the
op vocabulary ``F``. Both take the same rows and give the same rows in the same order, so
results and gradients are identical; they differ in which links the rows cross.

An EP group of ``G = N g`` ranks spans N nodes of g ranks; rank ``(a, i)`` is local rank i
of node a (EP rank a g + i). ``counts`` [G, G] holds the rows every source sends every
destination (all ranks know it: the dispatch all-gathers the per-expert counts).

- flat: one all-to-all over the EP group; a row for another node crosses the inter-node
  link directly, one message per rank pair.
- hierarchical: (A) inside the node, rank (a, i) hands local rank j every row bound for
  local rank j of any node; (B) between nodes, along each "rail" j (the ranks with local
  index j), rank (a, j) sends node b's share of its node's rows to (b, j) in one message.
  Rows bound for the own node never leave it; inter-node traffic is aggregated per node
  pair and rail (g messages per node pair instead of g^2); the bytes that must cross nodes
  are the same. Rows arrive ordered by source rank, as with the flat exchange.
"""
from __future__ import annotations

import numpy as np

from core.layout import Hierarchy


def permute_rows(F, x, order: np.ndarray):
    """Rows of x in ``order``; x itself when the order is x's own first rows (an empty or
    identity permutation keeps x's gradient path, and MindSpore cannot differentiate an
    empty gather)."""
    if np.array_equal(order, np.arange(order.size)):
        return x
    return F.gather_rows(x, F.tensor(order, F.index_dtype))


def transposed_blocks(sizes: np.ndarray) -> np.ndarray:
    """Rows laid out as blocks of ``sizes`` [P, Q] rows in (p, q) order -> the permutation
    (int64, one entry per row) that lays the same blocks out in (q, p) order."""
    sizes = np.asarray(sizes, np.int64)
    starts = (np.cumsum(sizes.reshape(-1)) - sizes.reshape(-1)).reshape(sizes.shape)
    pieces = [starts[p, q] + np.arange(sizes[p, q]) for q in range(sizes.shape[1]) for p in range(sizes.shape[0])]
    return np.concatenate(pieces + [np.zeros(0, np.int64)]).astype(np.int64)


def flat_all_to_all(F, x, counts: np.ndarray, me: int, group):
    """x: this rank's rows sorted by destination (its first sum(counts[me]) rows) ->
    rows received, ordered by source rank."""
    return F.all_to_all(x, counts[me].tolist(), counts[:, me].tolist(), group)


def hierarchical_all_to_all(F, x, counts: np.ndarray, me: int, hierarchy: Hierarchy):
    """Same contract as ``flat_all_to_all``, in two phases (module docstring)."""
    g = hierarchy.ranks_per_node
    nodes = counts.shape[0] // g
    a, i = divmod(me, g)
    by_rank = counts.reshape(nodes, g, nodes, g)  # [source node, source local, dest node, dest local]
    # phase A, inside node a: my rows [dest node b, dest local j] regrouped j-major, to local rank j
    mine = by_rank[a, i]  # [b, j]
    rows = permute_rows(F, x, transposed_blocks(mine))
    if g > 1:
        rows = F.all_to_all(rows, mine.sum(0).tolist(), by_rank[a, :, :, i].sum(1).tolist(), hierarchy.node_group)
    # now: rows from each local source i' of node a for rail i, each block ordered by dest node b
    gathered = by_rank[a, :, :, i]  # [i', b]
    rows = permute_rows(F, rows, transposed_blocks(gathered))  # -> [b][i']
    if nodes > 1:
        rows = F.all_to_all(rows, gathered.sum(0).tolist(), by_rank[:, :, a, i].sum(1).tolist(), hierarchy.rail_group)
    return rows  # [source node c][source local i'] = source rank order

