"""The settings of one MoE layer, validated up front with one-line errors."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict

from core.errors import ConfigError

EXPERT_TYPES = ("swiglu", "gelu")
DISPATCH_MODES = ("dropless", "capacity")
DROP_POLICIES = ("position", "probability")


@dataclass
class MoEConfig:
    """One MoE layer. Names follow docs/architecture.md; ``router_options`` holds the keys that only
    the chosen router reads (each router validates its own).

    ``balance_loss_coef`` weighs a balance loss normalised per assignment: f_i is expert i's
    share of all T * k (token, slot) assignments, so L = N sum_i f_i P_i is 1 when balanced
    whatever k. The AdaMoE authors' code and HF's ``load_balancing_loss_func`` sum the
    per-slot losses over the k slots (k times ours, k when balanced): a coefficient quoted in
    that convention is multiplied by k here (AdaMoE's Mixtral run, 1e-4 with k = 4: 4e-4).
    Top-1 routers (Switch, LocMoE) are the same in both.

    ``shared_expert_hidden`` > 0 adds a shared expert that every token passes through (an FFN
    of that width and ``expert_type``, outside routing; DeepSeekMoE, Qwen2-MoE): y = routed +
    shared(x), or with ``shared_expert_gate`` y = routed + sigmoid(x w_s^T) * shared(x)
    (Qwen2-MoE's gate, w_s [1, d]). 0: none."""

    d_model: int = 512
    ffn_hidden: int = 2048
    num_experts: int = 8
    num_null_experts: int = 0
    top_k: int = 2
    router: str = "topk"
    expert_type: str = "swiglu"
    dispatch: str = "dropless"
    capacity_factor: float = 1.25
    drop_policy: str = "position"
    renormalize: bool = True
    balance_loss_coef: float = 1e-2
    z_loss_coef: float = 1e-3
    router_init_std: float = 0.0
    expert_init_std: float = 0.02
    shared_expert_hidden: int = 0
    shared_expert_gate: bool = False
    router_options: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_slots(self) -> int:
        """Experts a token can be routed to: true plus null."""
        return self.num_experts + self.num_null_experts

    @property
    def router_std(self) -> float:
        """Switch init: truncated normal with std sqrt(0.1 / fan_in) unless set."""
        return self.router_init_std or math.sqrt(0.1 / self.d_model)

    def validate(self, section: str = "moe") -> "MoEConfig":
        def positive_int(key: str) -> None:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{section}.{key}={value!r}: must be a positive integer")

        for key in ("d_model", "ffn_hidden", "num_experts", "top_k"):
            positive_int(key)
        if not isinstance(self.num_null_experts, int) or self.num_null_experts < 0:
            raise ConfigError(f"{section}.num_null_experts={self.num_null_experts!r}: must be an integer >= 0")
        if not isinstance(self.shared_expert_hidden, int) or isinstance(self.shared_expert_hidden, bool) \
                or self.shared_expert_hidden < 0:
            raise ConfigError(f"{section}.shared_expert_hidden={self.shared_expert_hidden!r}: "
                              "must be an integer >= 0 (0: no shared expert)")
        if not isinstance(self.shared_expert_gate, bool):
            raise ConfigError(f"{section}.shared_expert_gate={self.shared_expert_gate!r}: must be true or false")
        if self.shared_expert_gate and not self.shared_expert_hidden:
            raise ConfigError(f"{section}.shared_expert_gate=True needs a shared expert (shared_expert_hidden > 0)")
        if self.top_k > self.num_slots:
            raise ConfigError(
                f"{section}.top_k={self.top_k} exceeds num_experts + num_null_experts = {self.num_slots}")
        for key, allowed in (("expert_type", EXPERT_TYPES), ("dispatch", DISPATCH_MODES),
                             ("drop_policy", DROP_POLICIES)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{section}.{key}={getattr(self, key)!r}: valid values are {', '.join(allowed)}")
        if self.dispatch == "capacity" and not (isinstance(self.capacity_factor, (int, float))
                                                and self.capacity_factor > 0):
            raise ConfigError(
                f"{section}.capacity_factor={self.capacity_factor!r}: must be > 0 with dispatch: capacity")
        for key in ("balance_loss_coef", "z_loss_coef", "router_init_std", "expert_init_std"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) < 0:
                raise ConfigError(f"{section}.{key}={getattr(self, key)!r}: must be a number >= 0")
        if not isinstance(self.router_options, dict):
            raise ConfigError(f"{section}.router_options must be a mapping, got {self.router_options!r}")
        return self

    def capacity(self, num_tokens: int) -> int:
        """Slots per true expert in capacity mode: ceil(cf * T * k / (n + m)), the balanced
        share of one expert among all n + m slots (GShard/Switch when m = 0)."""
        return max(1, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_slots))
