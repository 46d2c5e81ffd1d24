"""Data placed by node (``data.node_domains``), as multi-source pretraining shards its data.

``node_domains[j]`` names the domains node j reads (a corpus's domain is its name, a user
file's its stem or its records' ``domain``; every domain of the data on at least one node).
Domain ids are renumbered in node order (node 0's domains first), so that with one domain
per expert group PanGu-Sigma's group g lives on the node that holds domain g
(``check_rre_placement``).

The global batch of B rows is N blocks of B / N rows, block j drawn from node j's own
seeded stream: the training windows whose every token belongs to node j's domains. Rank r of
a multi-process run reads rows [r B / W, (r + 1) B / W), all inside its node's block (nodes
are consecutive ranks), so the ranks of a node share its stream and each reads its own rows;
one process with a router topology sees the same blocks as its virtual nodes' token chunks
(``core.topology``).

Validation: ``eval_batches`` batches of each domain's own validation windows, the loss per
domain (``val_loss/<domain>``) and their mean (``val_loss``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from training.data.batches import Batch, BatchIterator, validation_batches
from training.data.pipeline import TokenData

KEY = "data.node_domains"


def window_domains(data: TokenData, starts: np.ndarray) -> np.ndarray:
    """[windows, S+1] domain id of every token of the windows at ``starts``."""
    return data.domains[starts[:, None] + np.arange(data.seq_len + 1)]


def placed_nodes(node_domains: List[List[str]], launcher_nodes: Optional[int], topology_nodes: Optional[int]) -> int:
    """The number of nodes ``node_domains`` must list: the launcher's (a multi-process run),
    else the router topology's virtual nodes, else its own length; one line on a mismatch."""
    given = len(node_domains)
    if launcher_nodes is not None and given != launcher_nodes:
        raise ConfigError(f"{KEY} lists {given} node(s) but the launcher started {launcher_nodes} node(s): give "
                          f"one list of domains per node")
    if launcher_nodes is None and topology_nodes is not None and given != topology_nodes:
        raise ConfigError(f"{KEY} lists {given} node(s) but moe.router_options.topology.nodes={topology_nodes} "
                          f"(the virtual nodes of one process): give one list of domains per node")
    return given


class NodeBatches:
    """Endless global batches: node j's block from its own ``BatchIterator`` (stream j + 1);
    resumable through ``state_dict()`` (every node's position)."""

    def __init__(self, streams: List[BatchIterator]) -> None:
        self.streams = streams

    def __iter__(self) -> "NodeBatches":
        return self

    def __next__(self) -> Batch:
        blocks = [next(stream) for stream in self.streams]
        return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

    def state_dict(self) -> Dict[str, object]:
        return {"nodes": [stream.state_dict() for stream in self.streams]}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        saved = state.get("nodes")
        if not isinstance(saved, list) or len(saved) != len(self.streams):
            raise ConfigError(f"data position: saved for {len(saved) if isinstance(saved, list) else 'no'} node "
                              f"stream(s), but {KEY} now places the data on {len(self.streams)} node(s)")
        for stream, position in zip(self.streams, saved):
            stream.load_state_dict(position)


class NodePlacement:
    """``data`` (domain ids renumbered in node order) placed on ``len(node_domains)`` nodes."""

    def __init__(self, data: TokenData, node_domains: List[List[str]]) -> None:
        known = list(data.domain_names)
        order: List[str] = []
        for j, names in enumerate(node_domains):
            for name in names:
                if name not in known:
                    raise ConfigError(f"{KEY}[{j}]: unknown domain {name!r}; the data's domains are {', '.join(known)}")
                order += [] if name in order else [name]
        missing = [name for name in known if name not in order]
        if missing:
            raise ConfigError(f"{KEY}: domain(s) {', '.join(missing)} of the data are on no node")
        renumber = np.array([order.index(name) for name in known], np.int32)
        self.data = replace(data, domain_names=order, domains=renumber[data.domains])
        self.node_domains = [[order.index(name) for name in names] for names in node_domains]
        train_domains = window_domains(self.data, self.data.train_starts)
        self.node_starts = []
        for j, ids in enumerate(self.node_domains):
            starts = self.data.train_starts[np.isin(train_domains, ids).all(1)]
            if not len(starts):
                raise ConfigError(f"{KEY}[{j}]: no training window of {self.data.seq_len + 1} tokens holds only "
                                  f"domains {', '.join(node_domains[j])} (lower data.seq_len)")
            self.node_starts.append(starts)
        val_domains = window_domains(self.data, self.data.val_starts)
        self.val_starts = {}
        for d, name in enumerate(order):
            starts = self.data.val_starts[(val_domains == d).all(1)]
            if not len(starts):
                raise ConfigError(f"{KEY}: domain {name} has no validation window of its own (raise data.val_fraction "
                                  f"or lower data.seq_len)")
            self.val_starts[name] = starts

    @property
    def num_nodes(self) -> int:
        return len(self.node_domains)

    def node_of_domain(self) -> Dict[int, List[int]]:
        """Domain id -> the nodes that read it."""
        out: Dict[int, List[int]] = {}
        for j, ids in enumerate(self.node_domains):
            for d in ids:
                out.setdefault(d, []).append(j)
        return out

    def train_batches(self, batch_size: int) -> NodeBatches:
        if batch_size % self.num_nodes:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the {self.num_nodes} nodes of {KEY}")
        d = self.data
        return NodeBatches([BatchIterator(d.tokens, d.domains, starts, d.seq_len, batch_size // self.num_nodes,
                                          d.seed, d.dataset, stream=j + 1) for j, starts in enumerate(self.node_starts)])

    def val_sets(self, batch_size: int, num_batches: int) -> Dict[str, List[Batch]]:
        """Each domain's fixed validation batches, by domain name."""
        d = self.data
        return {name: validation_batches(d.tokens, d.domains, starts, d.seq_len, batch_size, num_batches)
                for name, starts in self.val_starts.items()}


def check_rre_placement(moe, placement: Optional[NodePlacement]) -> None:
    """``moe.router_options.domains_by_node`` (router rre): each domain's expert group must
    live on the one node that reads that domain, so its all-to-all stays inside the node.
    With E experts in D groups on N nodes, group g is on node g // (D / N)."""
    if moe.router != "rre" or not moe.router_options.get("domains_by_node", False):
        return
    key = "moe.router_options.domains_by_node"
    if placement is None:
        raise ConfigError(f"{key}: needs {KEY} (each node its own domains)")
    groups, nodes = moe.router_options["num_domains"], placement.num_nodes
    if groups != len(placement.data.domain_names) or groups % nodes:
        raise ConfigError(f"{key}: moe.router_options.num_domains={groups} must equal the data's "
                          f"{len(placement.data.domain_names)} domains and be a multiple of the {nodes} nodes")
    for d, on in sorted(placement.node_of_domain().items()):
        home = d // (groups // nodes)
        if on != [home]:
            raise ConfigError(f"{key}: domain {placement.data.domain_names[d]} is read on node(s) {on}, but its expert "
                              f"group {d} lives on node {home} only: give each node {groups // nodes} domain(s) of its "
                              f"own in {KEY}")


def streams(data: TokenData, node_domains: List[List[str]], batch_size: int, eval_batches: int,
            launcher_nodes: Optional[int], topology_nodes: Optional[int]
            ) -> Tuple[TokenData, Optional[NodePlacement], object, Dict[str, List[Batch]]]:
    """(data, placement or None, training batches, validation sets by domain; one set named ''
    without placement) for ``data.node_domains``."""
    if not node_domains:
        return data, None, data.train_batches(batch_size), {"": data.val_batches(batch_size, eval_batches)}
    placed_nodes(node_domains, launcher_nodes, topology_nodes)
    placement = NodePlacement(data, node_domains)
    return (placement.data, placement, placement.train_batches(batch_size),
            placement.val_sets(batch_size, eval_batches))
