"""Expert parallelism: the experts of a layer split over the ranks of an EP group, tokens
moved to them and back by all-to-all. Written once on the op vocabulary (``F.all_to_all``,
``F.all_gather``); ``parallel/`` makes the groups.

``ExpertParallelExperts`` has the interface of ``models.experts.Experts`` (``batched``,
``grouped``), so the capacity, slot and dropless dispatch modes run unchanged on top of it
(the exchange itself, flat or hierarchical, is ``parallel.all_to_all``):

- capacity and slot modes hand over fixed buffers [E, C, d] (C = this rank's capacity per
  expert: every source rank sends at most C tokens to each expert, so a rank's expert e
  sees ``ep * C`` rows): equal splits of ``E/ep * C`` rows per rank;
- dropless hands over rows sorted by expert with their counts [E]: the counts are
  all-gathered (one small collective), then the rows go with uneven splits, are regrouped
  by local expert for one grouped matmul, and come back in their original order. Only
  assignments to true experts travel: no padding, nothing dropped.

Gradients flow back through both all-to-alls. A rank that sends nothing, or whose experts
receive nothing, takes part with empty splits.
"""
from __future__ import annotations

import numpy as np

from core.layout import ExpertParallel
from models.experts import Experts
from parallel.all_to_all import flat_all_to_all, hierarchical_all_to_all, permute_rows, transposed_blocks
from parallel.traffic import traffic


def exchange_compiles(dispatch_mode: str, all_to_all: str) -> bool:
    """Whether an expert-parallel layer's exchanges can run inside a compiled step (MindSpore
    GRAPH_MODE / ``ms.jit``): fixed buffers (``capacity``, ``slots``) over the ``flat``
    exchange have static splits; ``dropless`` splits are read on the host, and the
    ``hierarchical`` exchange permutes its rows on the host."""
    return dispatch_mode != "dropless" and all_to_all == "flat"


class ExpertParallelExperts:
    """``Experts`` of which this rank holds ``num_experts / ep`` (its parameters are the local
    shard: w [E_local, ...]); the rest live on the other ranks of ``parallel.group``."""

    def __init__(self, experts: Experts, parallel: ExpertParallel) -> None:
        self.experts = experts
        self.parallel = parallel
        self.num_experts = experts.config.num_experts
        self.per_rank = self.num_experts // parallel.size
        self.traffic: dict = {}
        # a fixed-buffer exchange sends every rank the same rows: its traffic per row sent to one rank
        self.fixed_traffic = self._count(np.ones((parallel.size, parallel.size), np.int64))

    def _count(self, counts: np.ndarray) -> dict:
        """The traffic of one exchange of ``counts`` [source, destination] over the EP group:
        rows sent to other ranks and of those across nodes (``parallel.traffic.traffic``)."""
        p = self.parallel
        sent, across = traffic(counts, p.rank, p.nodes or (0,) * p.size, p.hierarchy)
        return {"a2a_sent_rows": sent, "a2a_cross_node_rows": across}

    def _exchange(self, F, x, counts: np.ndarray):
        """Rows to their ranks (``counts`` [source, destination] over the EP group), flat or
        hierarchical (``parallel.all_to_all``)."""
        p = self.parallel
        if p.hierarchy is None:
            return flat_all_to_all(F, x, counts, p.rank, p.group)
        return hierarchical_all_to_all(F, x, counts, p.rank, p.hierarchy)

    def _exchange_fixed(self, F, x):
        """x [ep R, d] (block j: the R rows for EP rank j) -> [ep R, d] (block j: the R rows
        from EP rank j). Flat, ``F.all_to_all_equal``: static shapes, so a compiled step can
        carry it."""
        p = self.parallel
        rows = x.shape[0] // p.size
        if p.hierarchy is None:
            return F.all_to_all_equal(x, p.group)
        return hierarchical_all_to_all(F, x, np.full((p.size, p.size), rows, np.int64), p.rank, p.hierarchy)

    def traffic_metrics(self, F, expert_out) -> dict:
        """This forward's all-to-all rows (dispatch and combine, sent to other ranks;
        backward moves as many again) as float32 scalars. Bytes = rows * d * element size.
        ``expert_out``: the experts' output, fixed buffers [E, C, d] (the traffic follows from
        the shape: constants, so a compiled step needs no host state) or rows [N, d] (dropless:
        counted on the host during the exchange, then the counters restart; also
        ``a2a_needed_rows``, the direct cross-rank rows the assignments needed, and
        ``a2a_own_node_share``: the share of this rank's assignments whose expert lives on
        its node)."""
        if len(expert_out.shape) == 3:  # dispatch and combine, each E/ep * C rows to every rank
            rows = 2 * self.per_rank * expert_out.shape[1]
            return {key: F.ones((), F.float32) * float(rows * per_row) for key, per_row in self.fixed_traffic.items()}
        out = {key: F.tensor(np.float32(value)) for key, value in sorted(self.traffic.items())}
        self.traffic = {}
        return out

    @property
    def flops_per_row(self) -> int:
        return self.experts.flops_per_row

    def param_specs(self):
        return self.experts.param_specs()

    def batched(self, F, params: dict, x):
        """x [E, C, d] (every expert's buffer on this rank) -> [E, C, d]."""
        num_experts, capacity, d = x.shape
        ep, local = self.parallel.size, self.per_rank
        received = self._exchange_fixed(F, F.reshape(x, (num_experts * capacity, d)))
        by_expert = F.transpose(F.reshape(received, (ep, local, capacity, d)), (1, 0, 2, 3))
        out = self.experts.batched(F, params, F.reshape(by_expert, (local, ep * capacity, d)))
        by_source = F.transpose(F.reshape(out, (local, ep, capacity, d)), (1, 0, 2, 3))
        back = self._exchange_fixed(F, F.reshape(by_source, (num_experts * capacity, d)))
        return F.reshape(back, (num_experts, capacity, d))

    def grouped(self, F, params: dict, x, tokens_per_expert):
        """x [N, d] sorted by expert (rows past sum(tokens_per_expert) are null
        assignments), tokens_per_expert [E] -> [N, d]; rows past the sum come back zero."""
        ep, local, me = self.parallel.size, self.per_rank, self.parallel.rank
        counts = F.to_numpy(F.all_gather(F.reshape(tokens_per_expert, (1, self.num_experts)), self.parallel.group))
        counts = counts.astype(np.int64)  # [ep source ranks, E]
        by_rank = counts.reshape(ep, ep, local).sum(-1)  # [source, destination]
        sent = int(by_rank[me].sum())
        needed = sent + int(by_rank[:, me].sum()) - 2 * int(by_rank[me, me])  # dispatch + combine, off-rank
        self.traffic["a2a_needed_rows"] = self.traffic.get("a2a_needed_rows", 0) + needed
        nodes = np.asarray(self.parallel.nodes or (0,) * ep)
        on_node = int(by_rank[me, nodes == nodes[me]].sum())
        self.traffic["a2a_own_node_share"] = on_node / sent if sent else 1.0
        for counted in (by_rank, by_rank.T):  # dispatch, combine
            for key, value in self._count(counted).items():
                self.traffic[key] = self.traffic.get(key, 0) + value
        received = self._exchange(F, x, by_rank)  # the first ``sent`` rows of x: true experts
        order = transposed_blocks(counts[:, me * local:(me + 1) * local])  # [source, expert] -> by expert
        local_counts = F.tensor(counts[:, me * local:(me + 1) * local].sum(0), F.index_dtype)
        out = self.experts.grouped(F, params, permute_rows(F, received, order), local_counts)
        back = self._exchange(F, permute_rows(F, out, np.argsort(order)), by_rank.T)
        return F.concat([back, F.zeros((x.shape[0] - sent, x.shape[1]), x.dtype)], 0)

