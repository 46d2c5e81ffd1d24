"""What every router provides, and the pieces most learned routers share."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, Dict

import numpy as np

from core.errors import ConfigError
from core.params import ParamSpec, kept_float32, prefixed, truncated_normal_init
from models.moe_config import MoEConfig


@dataclass
class NoOptions:
    """A router without options of its own."""


class Router(ABC):
    """A router maps float32 tokens x [T, d] to a routing dict:

    - ``logits`` [T, S] and ``probs`` [T, S] over the S = n + m slots (true then null);
    - ``expert_index`` [T, k] (index dtype; values >= n are null experts);
    - ``expert_weight`` [T, k] float32 (0 for null slots);
    - ``losses``: dict of unweighted scalar losses; ``loss_coefs`` gives each coefficient.

    A router that fills expert slots itself (expert choice, balanced assignment) returns
    instead of expert_index/expert_weight: ``slot_token`` [E, C] (token per slot, T when
    empty), ``slot_weight`` [E, C] and ``requested_assignments`` (scalar float32: the
    (token, expert) pairs it wanted before capacity, for ``dropped_fraction``); the layer
    then uses ``models.dispatch.slots`` whatever ``moe.dispatch`` says.

    ``context`` carries per-token side inputs (``token_ids``, ``domain_ids``, shaped like the
    input's token axes) for routers that need them: list them in ``needs_context``, check
    their values in ``check_context``. Routers without a learned gate (hash, RRE) may leave
    out ``logits``/``probs``. Subclasses set ``Options`` to a dataclass of their own keys.

    ``causal = False`` marks a router whose choice for a token depends on later tokens of
    the batch (expert choice): fine for training, refused by ``require_causal``, which
    autoregressive decoding must call.

    Host-side state hook: a router with non-trainable state that follows the training
    (aux-loss-free bias, measured capacity) implements ``after_step``. After each optimizer
    step the trainer calls ``router.after_step(params, aux)`` with numpy values (``params``:
    at least this router's parameters, full names; ``aux``: this layer's aux from the step,
    reduced over data-parallel ranks) and loads the returned {full name: new value} dict of
    non-trainable parameters into the shell with ``update_numpy``. State that compiled code
    bakes in as a constant (a capacity, hence a shape) is reported by ``static_key``: when it
    changes after ``after_step``, a compiling trainer (MindSpore ``ms.jit``) must rebuild.

    ``layer_index``: the model layer this router serves (0 for a standalone layer), set by
    ``MoELayer`` before any ``param_specs`` call; routers with fixed per-layer state (the
    token tables of hash and RRE) seed it from this index.
    """

    name = "base"
    Options: Any = NoOptions
    needs_context: tuple = ()
    causal = True
    layer_index = 0

    def __init__(self, config: MoEConfig, prefix: str = "router.") -> None:
        self.config = config
        self.prefix = prefix
        self.options = self.parse_options(config.router_options)

    @classmethod
    def parse_options(cls, raw: Dict[str, Any]):
        allowed = {f.name for f in fields(cls.Options)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(
                f"moe.router_options.{unknown[0]} is not an option of router {cls.name!r}; "
                f"valid options: {', '.join(sorted(allowed)) or 'none'}")
        return cls.Options(**raw)

    def weight_specs(self) -> Dict[str, ParamSpec]:
        """This router's parameters, names relative to its prefix."""
        return {}

    def param_specs(self) -> Dict[str, ParamSpec]:
        """Full names; router weights stay float32 (selective precision)."""
        return prefixed(self.prefix, kept_float32(self.weight_specs()))

    def param(self, params: dict, name: str):
        return params[self.prefix + name]

    def loss_coefs(self) -> Dict[str, float]:
        return {}

    def check_context(self, context: Dict[str, Any]) -> None:
        """Check the values of the side inputs (host side, before any compiled compute);
        raise ConfigError on bad values."""

    def check_noise(self, num_tokens: int, routing_noise) -> None:
        """Check the batch's token count and the optional ``routing_noise`` (host side, before
        any compiled compute); raise ConfigError. Deterministic routers take no noise."""
        if routing_noise is not None:
            raise ConfigError(f"moe.router={self.name!r} is deterministic: it takes no routing_noise")

    def require_causal(self, purpose: str = "autoregressive decoding") -> None:
        """Raise ConfigError if this router cannot be used for ``purpose`` (it sees the
        whole batch when it routes a token)."""
        if not self.causal:
            raise ConfigError(f"moe.router={self.name!r} is not causal (a token's experts depend on "
                              f"later tokens): it cannot be used for {purpose}")

    def after_step(self, params: Dict[str, np.ndarray], aux: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """New values of non-trainable parameters after a training step (see the class
        docstring); none by default."""
        return {}

    def bind_parallel(self, parallel) -> None:
        """Called once by a multi-process MoE layer with its ``core.layout.ExpertParallel``
        (routers that read the cluster's layout, e.g. LocMoE's topology, override it)."""

    def static_key(self) -> tuple:
        """Host-side values compiled into the step as constants; () by default."""
        return ()

    @abstractmethod
    def route(self, F, params: dict, x, context: dict) -> dict:
        """x [T, d] float32 -> the routing dict described in the class docstring."""


class LinearGateRouter(Router):
    """Routers whose logits are ``x @ weight`` with weight [d, S] (Switch init)."""

    def weight_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        return {"weight": ParamSpec((c.d_model, c.num_experts), truncated_normal_init(c.router_std))}

    def loss_coefs(self) -> Dict[str, float]:
        return {"balance": self.config.balance_loss_coef, "z": self.config.z_loss_coef}


def finite_number(value: Any) -> bool:
    """A real int or float (not bool), neither NaN nor +-inf: router options use it in their checks."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_top1(config: MoEConfig, router: str) -> None:
    """For routers that give each token exactly one true expert: top_k 1, no null experts."""
    if config.top_k != 1:
        raise ConfigError(f"moe.top_k={config.top_k}: router {router!r} is top-1, set moe.top_k: 1")
    if config.num_null_experts:
        raise ConfigError(f"moe.num_null_experts={config.num_null_experts}: router {router!r} has no null experts")
