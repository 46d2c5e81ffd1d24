"""What LocMoE and LocMoE+ share: the topology, the locality loss settings, the GrAP gate,
and a host-side capacity factor measured from the routed tokens.

Router options (``moe.router_options``):

- ``topology``: ``{nodes, devices_per_node}`` (``core.topology``); none = one node;
- ``locality_coef`` (mu): weight of L_loc. Default ``DEFAULT_LOCALITY_COEF`` with a topology,
  0 without; a coefficient > 0 without a topology is a ConfigError;
- ``locality_divergence`` (``forward`` | ``reverse``) and ``locality_epsilon``: see
  ``models.locality``;
- ``capacity_policy``: ``bound`` (capacity from the measured bound, see
  ``models.capacity_bound``) or ``factor`` (``moe.capacity_factor``);
- ``bound_unit`` (with ``capacity_policy: bound``): how the bound becomes the capacity.
  ``factor`` (default): read as a capacity factor, ec = ceil(T * bound / (ep * n)) slots per
  (device, expert); ``tokens``: read as Theorem 1's proof defines ec_min, a number of tokens
  per expert, ec = ceil(bound) slots per (device, expert) whatever T. Until the first
  measurement both use ``moe.capacity_factor``. scripts/capacity_experiment.py shows what
  each gives in the paper's regime and in ours.

Routers of this family add to the layer's aux (no gradient): ``own_node_share`` (with a
topology) and the measured cosine their capacity bound reads (``measured_key``).

In a multi-process run (``launcher_placement``) the topology is the launcher's real placement
and the locality loss, own-node share and capacity are those of the same tokens on virtual
nodes in one process (tests/distributed checks it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from core.layout import ExpertParallel
from core.rules import MAPPING, number, one_of, optional, setting
from core.topology import Topology
from models.capacity_bound import MeasuredCapacityFactor, device_capacity, device_capacity_in_tokens
from models.locality import DIVERGENCES, locality_loss, own_node_share, rank_locality_loss
from models.routers.base import Router

DEFAULT_LOCALITY_COEF = 0.03  # smallest mu at the plateau of scripts/locality_experiment.py
CAPACITY_POLICIES = ("bound", "factor")
BOUND_UNITS = ("factor", "tokens")
NORM_FLOOR = 1e-12


@dataclass
class LocalityOptions:
    topology: Optional[Dict[str, Any]] = setting(None, optional(MAPPING))
    locality_coef: Optional[float] = setting(None, optional(number(0.0)))
    locality_divergence: str = setting("forward", one_of(*DIVERGENCES))
    locality_epsilon: float = setting(0.01, number(0.0, low_open=True, high=1.0, high_open=True))
    capacity_policy: str = setting("bound", one_of(*CAPACITY_POLICIES))
    bound_unit: str = setting("factor", one_of(*BOUND_UNITS))


def grap_logits(F, x, num_experts: int):
    """GrAP (grouped average pooling): x [T, d] -> [T, n], logit i = mean of x's i-th contiguous
    d/n slice, i.e. x . w_i with the fixed orthogonal w_i = (n/d) 1[i d/n <= j < (i+1) d/n]."""
    num_tokens, d = x.shape
    return F.mean(F.reshape(x, (num_tokens, num_experts, d // num_experts)), -1)


def grap_affinity(F, x, num_experts: int):
    """delta_ti = cos(x_t, w_i) for the GrAP weights: x [T, d] -> [T, n] in [-1, 1]
    (slice mean * sqrt(d/n) / |x_t|)."""
    d = x.shape[1]
    norm = F.sqrt(F.sum(x * x, -1, True) + NORM_FLOOR)
    return grap_logits(F, x, num_experts) * math.sqrt(d / num_experts) / norm


class LocalityRouter(Router):
    """Base of ``locmoe`` and ``locmoe_plus``. Subclasses set ``measured_key`` (the aux entry
    with the measured cosine), ``refresh_every`` and implement ``bound`` and ``route``.

    ``node``: this rank's node in the EP group of a multi-process run (``parallel`` of more
    than one rank: the topology is then the launcher's), None when the nodes are virtual
    (one process)."""

    Options = LocalityOptions
    null_experts = False
    measured_key = ""

    def setup(self) -> None:
        o, config, parallel = self.options, self.config, self.parallel
        section = "moe.router_options"
        self.topology = None if o.topology is None else Topology.from_config(o.topology, config.num_experts)
        if self.topology is None and o.locality_coef:
            raise ConfigError(f"{section}.locality_coef={o.locality_coef}: the locality loss needs "
                              f"{section}.topology (which experts live on which node)")
        self.node: Optional[int] = None
        if parallel is not None and parallel.size > 1:
            self.topology, self.node = self.launcher_placement(parallel)
        default = DEFAULT_LOCALITY_COEF if self.topology is not None else 0.0
        self.locality_coef = default if o.locality_coef is None else float(o.locality_coef)
        self.num_devices = 1 if self.topology is None else self.topology.num_devices
        self.capacity_state = MeasuredCapacityFactor(config.capacity_factor, self.bound,
                                                     self.configured_delta(), self.refresh_every())

    def launcher_placement(self, parallel: ExpertParallel) -> Tuple[Topology, int]:
        """A multi-process run: (the launcher's topology, this rank's node). The topology is the
        EP group's nodes and ranks per node (a configured one must agree), and every token of
        this rank lives on its node and device. Everything else stays as with virtual nodes
        in one process."""
        nodes = sorted(set(parallel.nodes))
        if any(parallel.nodes.count(node) * len(nodes) != parallel.size for node in nodes):
            raise ConfigError(f"moe.router={self.name!r} needs the {parallel.size} expert-parallel ranks spread "
                              f"evenly over their nodes (launcher placed them on nodes {list(parallel.nodes)})")
        real = Topology(self.config.num_experts, len(nodes), parallel.size // len(nodes))
        if self.topology is not None and self.topology != real:
            raise ConfigError(f"moe.router_options.topology={self.options.topology}: the launcher placed the "
                              f"{parallel.size} expert-parallel ranks on {real.num_nodes} node(s) of "
                              f"{real.devices_per_node}; set it to match or leave it out")
        return real, nodes.index(parallel.nodes[parallel.rank])

    def device_ranges(self, num_tokens: int):
        """(start, end) of every device's tokens in this batch: the virtual devices' chunks,
        or, on one rank of a multi-process run, all of them on this rank's device."""
        if self.node is not None or self.topology is None:
            return [(0, num_tokens)]
        return self.topology.device_token_ranges(num_tokens)

    def batch_tokens(self, num_tokens: int) -> int:
        """Tokens of the expert-parallel batch the capacity ec = ceil(T cf / (ep n)) reads:
        this batch, or the EP group's (every rank holds as many) in a multi-process run."""
        return num_tokens * (self.num_devices if self.node is not None else 1)

    def node_share(self, F, assignment):
        """Share of assignments that stay on their token's node (aux ``own_node_share``)."""
        return own_node_share(F, assignment, self.topology, self.node)

    def check_grap(self, section: str) -> None:
        d, n = self.config.d_model, self.config.num_experts
        if d % n:
            raise ConfigError(f"{section}: the GrAP gate needs moe.d_model={d} divisible by moe.num_experts={n}")

    def configured_delta(self) -> Optional[float]:
        """A fixed cosine for the bound instead of a measured one (none by default)."""
        return None

    def refresh_every(self) -> int:
        return 0

    def bound(self, delta: float) -> float:
        """Capacity factor from a cosine."""
        raise NotImplementedError

    @property
    def capacity_factor(self) -> float:
        """The capacity setting in use now (host-side state): a capacity factor, or with
        ``bound_unit: tokens`` and a bound in hand, ec_min in tokens per expert."""
        if self.options.capacity_policy == "factor":
            return float(self.config.capacity_factor)
        return self.capacity_state.factor

    def capacity_per_device(self, num_tokens: int) -> int:
        """Slots per (device, expert): ec = ceil(T * cf / (ep * n)), or ceil(ec_min) when the
        bound is read in tokens (``bound_unit``)."""
        o = self.options
        if o.capacity_policy == "bound" and o.bound_unit == "tokens" and self.capacity_state.measured:
            return device_capacity_in_tokens(num_tokens, self.capacity_state.factor, self.num_devices)
        return device_capacity(num_tokens, self.capacity_factor, self.num_devices, self.config.num_experts)

    def loss_coefs(self) -> Dict[str, float]:
        return {"balance": self.config.balance_loss_coef, "locality": self.locality_coef}

    def locality(self, F, probs):
        """L_loc over the topology (call only when ``locality_coef`` > 0). probs [T, n] -> scalar."""
        o = self.options
        if self.node is None:
            return locality_loss(F, probs, self.topology, o.locality_divergence, o.locality_epsilon)
        return rank_locality_loss(F, probs, self.topology, self.node, self.parallel.node_group,
                                  self.topology.devices_per_node, o.locality_divergence, o.locality_epsilon)

    def static_key(self) -> tuple:
        """The capacity setting in use (and whether it is a measured bound, which ``bound_unit:
        tokens`` reads differently): it sets the slot shapes that a compiled step bakes in."""
        return (self.capacity_factor, self.capacity_state.measured)

    def state_dict(self) -> Dict[str, Any]:
        """The measured capacity factor and how many measurements it has seen."""
        return self.capacity_state.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.capacity_state.load_state_dict(state)

    def after_step(self, params: Dict[str, np.ndarray], aux: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Feed the step's measured cosine to the capacity state (host side). The capacity is a
        static shape, so it changes no parameter; ``static_key`` tells a compiling trainer to
        rebuild."""
        if self.options.capacity_policy == "bound" and self.measured_key in aux:
            self.capacity_state.update(float(np.mean(aux[self.measured_key])))
        return {}
