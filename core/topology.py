"""Which experts live on which node and device, and which node each token comes from.

Experts are laid out contiguously: with ``n`` experts, ``N`` nodes and ``g`` devices per node
(expert-parallel degree ``ep = N * g``), expert ``e`` lives on device ``e // (n / ep)`` and
node ``e // (n / N)``. Tokens have a home device: a batch seen by one process is split into
``ep`` contiguous chunks, chunk ``k`` being the tokens that device ``k`` would hold in a real
run (tokens ``[floor(k T / ep), floor((k + 1) T / ep))``), so one process can simulate the
whole cluster with *virtual* nodes and devices.

Config (chosen: under the router that uses it, since only locality-aware routers read it):

    moe:
      router_options:
        topology: {nodes: 2, devices_per_node: 2}

A topology is a plain host-side object: every boundary is a Python int, so code on the op
vocabulary can use them as static slice bounds (GRAPH_MODE friendly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Tuple

import numpy as np

from core.errors import ConfigError

KEYS = ("nodes", "devices_per_node")


def _positive_int(value: Any, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{setting}={value!r}: must be a positive integer")
    return value


@dataclass(frozen=True)
class Topology:
    """``num_experts`` experts on ``num_nodes`` nodes of ``devices_per_node`` devices each."""

    num_experts: int
    num_nodes: int
    devices_per_node: int = 1
    section: str = "moe.router_options.topology"

    def __post_init__(self) -> None:
        _positive_int(self.num_experts, "moe.num_experts")
        _positive_int(self.num_nodes, f"{self.section}.nodes")
        _positive_int(self.devices_per_node, f"{self.section}.devices_per_node")
        if self.num_experts % self.num_nodes:
            raise ConfigError(f"{self.section}.nodes={self.num_nodes}: moe.num_experts={self.num_experts} "
                              "must divide evenly over the nodes")
        if self.num_experts % self.num_devices:
            raise ConfigError(f"{self.section}.devices_per_node={self.devices_per_node}: moe.num_experts="
                              f"{self.num_experts} must divide evenly over nodes * devices_per_node = "
                              f"{self.num_devices} devices")

    @classmethod
    def from_config(cls, raw: Any, num_experts: int,
                    section: str = "moe.router_options.topology") -> "Topology":
        """From a mapping ``{nodes: int, devices_per_node: int (default 1)}``."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{section} must be a mapping like {{nodes: 2, devices_per_node: 1}}, got {raw!r}")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise ConfigError(f"{section}.{unknown[0]} is not a topology setting; valid: {', '.join(KEYS)}")
        if "nodes" not in raw:
            raise ConfigError(f"{section}.nodes is missing: say how many nodes the experts live on")
        return cls(num_experts, raw["nodes"], raw.get("devices_per_node", 1), section)

    @property
    def num_devices(self) -> int:
        """Expert-parallel degree ``ep``."""
        return self.num_nodes * self.devices_per_node

    @property
    def experts_per_node(self) -> int:
        return self.num_experts // self.num_nodes

    @property
    def experts_per_device(self) -> int:
        return self.num_experts // self.num_devices

    def node_experts(self, node: int) -> Tuple[int, int]:
        """Experts living on ``node``: the half-open range (first, end)."""
        m = self.experts_per_node
        return node * m, (node + 1) * m

    def expert_nodes(self) -> np.ndarray:
        """[n] home node of every expert."""
        return np.arange(self.num_experts) // self.experts_per_node

    def expert_devices(self) -> np.ndarray:
        """[n] device of every expert."""
        return np.arange(self.num_experts) // self.experts_per_device

    def device_token_ranges(self, num_tokens: int) -> List[Tuple[int, int]]:
        """The contiguous token chunk (start, end) of every virtual device, in device order."""
        ep = self.num_devices
        return [(k * num_tokens // ep, (k + 1) * num_tokens // ep) for k in range(ep)]

    def node_token_ranges(self, num_tokens: int) -> List[Tuple[int, int]]:
        """The contiguous token chunk (start, end) of every node (its devices' chunks)."""
        devices = self.device_token_ranges(num_tokens)
        g = self.devices_per_node
        return [(devices[j * g][0], devices[(j + 1) * g - 1][1]) for j in range(self.num_nodes)]

    def token_nodes(self, num_tokens: int) -> np.ndarray:
        """[T] home node of every token of a batch of ``num_tokens``."""
        home = np.zeros(num_tokens, np.int64)
        for node, (start, end) in enumerate(self.node_token_ranges(num_tokens)):
            home[start:end] = node
        return home
