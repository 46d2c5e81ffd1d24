"""Where every rank sits: world, expert-parallel (EP) and expert-data-parallel (EDP) groups,
nodes. Framework-free: plain ints and rank lists, checked before any collective runs.

With ``W`` ranks and expert-parallel size ``ep`` (``parallel.expert_parallel``):

- data parallel spans the whole world: every rank reads its own ``B / W`` rows of the
  global batch, and non-expert gradients are averaged over all ``W`` ranks;
- EP groups are ``ep`` consecutive ranks ``[k ep, (k + 1) ep)``; rank ``r`` holds experts
  ``[(r mod ep) n / ep, (r mod ep + 1) n / ep)`` of every MoE layer (contiguous, as in
  ``core.topology``), and tokens travel inside the EP group by all-to-all;
- EDP groups are the ``W / ep`` ranks with the same ``r mod ep`` (replicas of the same
  experts): expert gradients are summed over them;
- nodes are ``local_world_size`` consecutive ranks (the launcher's layout), so an EP group
  that fits in a node stays inside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from core.errors import ConfigError


@dataclass(frozen=True)
class ParallelLayout:
    """One rank's place in a run of ``world_size`` ranks (``local_world_size`` per node)."""

    world_size: int
    rank: int
    expert_parallel: int = 1
    local_world_size: int = 1

    def __post_init__(self) -> None:
        w, ep = self.world_size, self.expert_parallel
        if not 0 <= self.rank < w:
            raise ConfigError(f"rank {self.rank} is outside the launcher's world of {w} ranks")
        if ep < 1 or w % ep:
            raise ConfigError(f"parallel.expert_parallel={ep} must divide the world size {w} "
                              f"(data parallel fills the rest: world = data_parallel * expert_parallel)")
        if self.local_world_size < 1 or w % self.local_world_size:
            raise ConfigError(f"the launcher's {self.local_world_size} ranks per node do not divide "
                              f"the world size {w}")

    @property
    def ep_rank(self) -> int:
        return self.rank % self.expert_parallel

    @property
    def edp_size(self) -> int:
        """Replicas of each expert."""
        return self.world_size // self.expert_parallel

    @property
    def node(self) -> int:
        return self.rank // self.local_world_size

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_world_size

    def ep_groups(self) -> List[List[int]]:
        """Every EP group, in order (torch needs every rank to create every group)."""
        ep = self.expert_parallel
        return [list(range(k * ep, (k + 1) * ep)) for k in range(self.edp_size)]

    def edp_groups(self) -> List[List[int]]:
        """Every EDP group, in order."""
        ep = self.expert_parallel
        return [list(range(j, self.world_size, ep)) for j in range(ep)]

    def ep_group(self) -> List[int]:
        return self.ep_groups()[self.rank // self.expert_parallel]

    def edp_group(self) -> List[int]:
        return self.edp_groups()[self.ep_rank]

    @property
    def node_aligned(self) -> bool:
        """Every EP group covers whole nodes or sits inside one."""
        return not (self.expert_parallel % self.local_world_size and self.local_world_size % self.expert_parallel)

    def ep_ranks_per_node(self) -> int:
        """g: ranks of one EP group on each node it spans (EP groups cover whole nodes, or
        sit inside one node)."""
        ep, local = self.expert_parallel, self.local_world_size
        if not self.node_aligned:
            raise ConfigError(f"parallel.all_to_all=hierarchical: an expert-parallel group of {ep} ranks must "
                              f"cover whole nodes of {local} ranks or fit inside one")
        return min(ep, local)

    def ep_node_groups(self) -> List[List[int]]:
        """Every (EP group, node) set of ranks, in order: the ranks of each EP group on each
        node it touches. Any layout has them (an EP group may straddle nodes unevenly); the
        locality loss reduces over them, and on node-aligned layouts they are the hierarchical
        exchange's phase A."""
        out = []
        for group in self.ep_groups():
            for rank in group:
                if out and out[-1][0] in group and out[-1][0] // self.local_world_size == rank // self.local_world_size:
                    out[-1].append(rank)
                else:
                    out.append([rank])
        return out

    def ep_node_group(self) -> List[int]:
        """This rank's (EP group, node) set of ranks."""
        return next(group for group in self.ep_node_groups() if self.rank in group)

    def ep_rail_groups(self) -> List[List[int]]:
        """Every (EP group, local index) set of ranks across its nodes: phase B."""
        g = self.ep_ranks_per_node()
        return [group[j::g] for group in self.ep_groups() for j in range(g)]

    def local_experts(self, num_experts: int, section: str = "moe.num_experts") -> Tuple[int, int]:
        """This rank's experts: the half-open range (first, end)."""
        check_experts(num_experts, self.expert_parallel, section)
        return expert_range(num_experts, self.expert_parallel, self.ep_rank)

    def batch_rows(self, batch_size: int) -> Tuple[int, int]:
        """This rank's rows (start, end) of a global batch of ``batch_size`` sequences."""
        if batch_size % self.world_size:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the world size "
                              f"{self.world_size} (every rank reads batch_size / world rows)")
        per_rank = batch_size // self.world_size
        return self.rank * per_rank, (self.rank + 1) * per_rank


def expert_range(num_experts: int, ep_size: int, ep_rank: int) -> Tuple[int, int]:
    """The experts of EP rank ``ep_rank`` of ``ep_size``: the half-open range (first, end),
    contiguous blocks of ``num_experts / ep_size``."""
    per_rank = num_experts // ep_size
    return ep_rank * per_rank, (ep_rank + 1) * per_rank


def check_experts(num_experts: int, expert_parallel: int, section: str = "moe.num_experts") -> None:
    if num_experts % expert_parallel:
        raise ConfigError(f"{section}={num_experts} must be divisible by parallel.expert_parallel="
                          f"{expert_parallel} (every EP rank holds the same number of experts)")


@dataclass(frozen=True)
class ExpertParallel:
    """What an MoE layer of a multi-process run needs: the EP group's ``size`` (1 in a purely
    data-parallel run), this rank's place in it, and opaque group handles for the backend's
    collectives (``F.all_to_all``, ``F.all_gather``, ``F.all_reduce``). ``batch_group`` spans
    the ``batch_ranks`` data-parallel ranks: router statistics are reduced over it, so the
    losses are those of the global batch. ``nodes``: the node of each rank of the EP group
    (for the traffic counters: bytes that cross nodes); ``node_group``: this rank's EP
    ranks on its node (on every layout; a group of one when it is alone there, which nothing
    reduces over); ``hierarchy``: a
    ``Hierarchy`` for the hierarchical all-to-all, None for flat."""

    size: int
    rank: int
    group: Any
    batch_group: Any
    batch_ranks: int
    nodes: Tuple[int, ...] = ()
    node_group: Any = None
    hierarchy: Any = None


@dataclass(frozen=True)
class Hierarchy:
    """How the EP group sits on nodes: ``ranks_per_node`` (g), and the group handles of this
    rank's node (its g EP ranks there) and rail (the EP ranks with its local index)."""

    ranks_per_node: int
    node_group: Any
    rail_group: Any


@dataclass(frozen=True)
class ParallelRun:
    """This rank's layout and its group handles: ``world``, ``ep`` (its EP group), ``edp``
    (its expert-data-parallel group)."""

    backend: str
    layout: ParallelLayout
    groups: Dict[str, Any]

    def expert_parallel(self) -> ExpertParallel:
        """What the MoE layers of this rank need (see ``core.layout.ExpertParallel``)."""
        lay = self.layout
        hierarchy = None
        if "rail" in self.groups:
            hierarchy = Hierarchy(lay.ep_ranks_per_node(), self.groups["node"], self.groups["rail"])
        return ExpertParallel(size=lay.expert_parallel, rank=lay.ep_rank, group=self.groups["ep"],
                              batch_group=self.groups["world"], batch_ranks=lay.world_size,
                              nodes=tuple(r // lay.local_world_size for r in lay.ep_group()),
                              node_group=self.groups.get("node"), hierarchy=hierarchy)

    @property
    def is_main(self) -> bool:
        return self.layout.rank == 0
