"""The settings of one MoE layer, validated up front with one-line errors."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict

from core.errors import ConfigError
from core.rules import FLAG, MAPPING, TEXT, check_fields, integer, number, one_of, setting

EXPERT_TYPES = ("swiglu", "gelu", "clamped_swiglu")
DISPATCH_MODES = ("dropless", "capacity")
DROP_POLICIES = ("position", "probability")


@dataclass
class MoEConfig:
    """One MoE layer. Names follow docs/architecture.md; every field declares its rule
    (``core.rules``); ``router_options`` holds the keys that only the chosen router reads
    (each router's ``Options`` declares theirs).

    ``balance_loss_coef`` weighs a balance loss normalised per assignment: f_i is expert i's
    share of all T * k (token, slot) assignments, so L = N sum_i f_i P_i is 1 when balanced
    whatever k. The AdaMoE authors' code and HF's ``load_balancing_loss_func`` sum the
    per-slot losses over the k slots (k times ours, k when balanced): a coefficient quoted in
    that convention is multiplied by k here (AdaMoE's Mixtral run, 1e-4 with k = 4: 4e-4).
    Top-1 routers (Switch, LocMoE) are the same in both.

    ``shared_expert_hidden`` > 0 adds a shared expert that every token passes through (an FFN
    of that width and ``expert_type``, outside routing; DeepSeekMoE, Qwen2-MoE): y = routed +
    shared(x), or with ``shared_expert_gate`` y = routed + sigmoid(x w_s^T) * shared(x)
    (Qwen2-MoE's gate, w_s [1, d]). 0: none.

    ``expert_type: clamped_swiglu`` is gpt-oss's: g = min(x W_gate, L), u = clip(x W_up, -L, L),
    h = (u + 1) * g * sigmoid(a g) with a = ``swiglu_alpha``, L = ``swiglu_limit``.
    ``expert_bias`` adds a bias to each expert's gate, up and down projections (gpt-oss)."""

    d_model: int = setting(512, integer(1))
    ffn_hidden: int = setting(2048, integer(1))
    num_experts: int = setting(8, integer(1))
    num_null_experts: int = setting(0, integer(0))
    top_k: int = setting(2, integer(1))
    router: str = setting("topk", TEXT)
    expert_type: str = setting("swiglu", one_of(*EXPERT_TYPES))
    dispatch: str = setting("dropless", one_of(*DISPATCH_MODES))
    capacity_factor: float = setting(1.25, number(None))  # > 0 with dispatch: capacity (validate)
    drop_policy: str = setting("position", one_of(*DROP_POLICIES))
    renormalize: bool = setting(True, FLAG)
    balance_loss_coef: float = setting(1e-2, number(0.0))
    z_loss_coef: float = setting(1e-3, number(0.0))
    router_init_std: float = setting(0.0, number(0.0))
    expert_init_std: float = setting(0.02, number(0.0))
    shared_expert_hidden: int = setting(0, integer(0))
    shared_expert_gate: bool = setting(False, FLAG)
    expert_bias: bool = setting(False, FLAG)
    swiglu_alpha: float = setting(1.702, number(None))
    swiglu_limit: float = setting(7.0, number(0.0, low_open=True))
    router_options: Dict[str, Any] = setting({}, MAPPING)

    @property
    def num_slots(self) -> int:
        """Experts a token can be routed to: true plus null."""
        return self.num_experts + self.num_null_experts

    @property
    def router_std(self) -> float:
        """Switch init: truncated normal with std sqrt(0.1 / fan_in) unless set."""
        return self.router_init_std or math.sqrt(0.1 / self.d_model)

    def validate(self, section: str = "moe") -> "MoEConfig":
        """Every field against its declared rule, then the checks that span fields; one-line
        ConfigErrors named ``<section>.<key>``."""
        check_fields(self, section)
        if self.shared_expert_gate and not self.shared_expert_hidden:
            raise ConfigError(f"{section}.shared_expert_gate=True needs a shared expert (shared_expert_hidden > 0)")
        if self.expert_type == "clamped_swiglu" and self.shared_expert_hidden:
            raise ConfigError(f"{section}.shared_expert_hidden={self.shared_expert_hidden}: a shared expert is "
                              f"swiglu or gelu, not {section}.expert_type='clamped_swiglu'")
        if self.top_k > self.num_slots:
            raise ConfigError(
                f"{section}.top_k={self.top_k} exceeds num_experts + num_null_experts = {self.num_slots}")
        if self.dispatch == "capacity" and self.capacity_factor <= 0:
            raise ConfigError(
                f"{section}.capacity_factor={self.capacity_factor!r}: must be > 0 with dispatch: capacity")
        return self

    def capacity(self, num_tokens: int) -> int:
        """Slots per true expert in capacity mode: ceil(cf * T * k / (n + m)), the balanced
        share of one expert among all n + m slots (GShard/Switch when m = 0)."""
        return max(1, math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_slots))
