"""What every router provides, and the pieces most learned routers share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from core.layout import ExpertParallel
from core.params import ParamSpec, kept_float32, prefixed, truncated_normal_init
from core.rules import check_fields
from models.dispatch.slots import SLOT_DISPATCH
from models.moe_config import MoEConfig
from models.routers.context import RoutingContext


@dataclass
class NoOptions:
    """A router without options of its own."""


class Router(ABC):
    """A router maps float32 tokens x [T, d] and the batch's ``RoutingContext`` to a routing dict:

    - ``logits`` [T, S] and ``probs`` [T, S] over the S = n + m slots (true then null);
    - ``expert_index`` [T, k] (index dtype; values >= n are null experts);
    - ``expert_weight`` [T, k] float32 (0 for null slots);
    - ``losses``: dict of unweighted scalar losses; ``loss_coefs`` gives each coefficient;
    - optional ``stats`` (scalars for the layer's aux, no gradient) and ``routing_log_prob``
      [T] (stochastic routers' score term, see ``models.moe_layer.MoELayer``).

    How the layer dispatches is declared by ``dispatch_mode``: ``moe.dispatch`` (``capacity``
    or ``dropless``) for the expert_index/expert_weight above; ``slots`` for a router that
    fills expert slots itself (``fills_slots = True``: expert choice, balanced assignment)
    and returns instead ``slot_token`` [E, C] (token per slot, T when empty), ``slot_weight``
    [E, C], optional ``slot_grad_scale`` [E, C], and ``requested_assignments`` (scalar
    float32: the (token, expert) pairs it wanted before capacity, for ``dropped_fraction``).

    Side inputs (``models.routers.context``): list those a router needs in ``needs_context``,
    check their values in ``check_context`` and the noise in ``check_noise`` (host side, before
    any compiled compute). Routers without a learned gate (hash, RRE) may leave out
    ``logits``/``probs``.

    Settings: ``Options`` is a dataclass of the router's own keys, each declared with its rule
    (``core.rules.setting``): ``parse_options`` refuses unknown keys and checks every value.
    ``top1_only`` (exactly one true expert per token: moe.top_k 1) and ``null_experts = False``
    (moe.num_null_experts must be 0) declare what the router needs of the layer's settings;
    checks that span settings, and state derived from them, go in ``setup``.

    ``causal = False`` marks a router whose choice for a token depends on later tokens of
    the batch (expert choice): fine for training, refused by ``require_causal``, which
    autoregressive decoding must call.

    Host-side state: a router with state that follows the training implements ``after_step``.
    After each optimizer step the trainer calls ``router.after_step(params, aux)`` with numpy
    values (``params``: this router's parameters, full names; ``aux``: this layer's aux from
    the step, reduced over data-parallel ranks) and loads the returned {full name: new value}
    dict of non-trainable parameters (aux-loss-free bias) into the shell. State kept on the
    router itself (a measured capacity) goes into checkpoints through ``state_dict`` /
    ``load_state_dict``; if compiled code bakes it in as a constant (a capacity, hence a
    shape), ``static_key`` reports it and a compiling train step rebuilds when it changes.

    Construction: ``layer_index`` is the model layer this router serves (0 for a standalone
    layer; routers with fixed per-layer state, the token tables of hash and RRE, seed it from
    this index); ``parallel`` is the layer's ``core.layout.ExpertParallel`` in a
    multi-process run (None in one process): batch statistics (balance-loss counts) are
    reduced over its data-parallel ranks, and routers that read the cluster's layout
    (LocMoE's topology) take it from there.
    """

    name = "base"
    Options: Any = NoOptions
    needs_context: Tuple[str, ...] = ()
    causal = True
    top1_only = False
    null_experts = True
    fills_slots = False

    def __init__(self, config: MoEConfig, prefix: str = "router.", layer_index: int = 0,
                 parallel: Optional[ExpertParallel] = None) -> None:
        self.config = config
        self.prefix = prefix
        self.layer_index = layer_index
        self.parallel = parallel
        if self.top1_only and config.top_k != 1:
            raise ConfigError(f"moe.top_k={config.top_k}: router {self.name!r} is top-1, set moe.top_k: 1")
        if not self.null_experts and config.num_null_experts:
            raise ConfigError(f"moe.num_null_experts={config.num_null_experts}: router {self.name!r} "
                              "has no null experts")
        self.options = self.parse_options(config.router_options)
        self.setup()

    def setup(self) -> None:
        """Checks that span settings and state derived from them, once the options are parsed
        (``self.config``, ``self.options``, ``self.parallel`` are set); nothing by default."""

    @classmethod
    def parse_options(cls, raw: Dict[str, Any]):
        """``moe.router_options`` as ``cls.Options``, every value checked against its rule."""
        allowed = {f.name for f in fields(cls.Options)}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(
                f"moe.router_options.{unknown[0]} is not an option of router {cls.name!r}; "
                f"valid options: {', '.join(sorted(allowed)) or 'none'}")
        options = cls.Options(**raw)
        check_fields(options, "moe.router_options")
        return options

    @property
    def dispatch_mode(self) -> str:
        """``slots`` when this router fills expert slots itself, else ``moe.dispatch``."""
        return SLOT_DISPATCH if self.fills_slots else self.config.dispatch

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

    def check_context(self, context: RoutingContext) -> None:
        """Check the values of the side inputs listed in ``needs_context`` (host side, before
        any compiled compute); raise ConfigError on bad values."""

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

    def static_key(self) -> tuple:
        """Host-side values compiled into the step as constants; () by default."""
        return ()

    def state_dict(self) -> Dict[str, Any]:
        """Host-side state kept on the router (not a parameter), JSON-serialisable, for
        checkpoints; {} by default."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; nothing by default."""

    @abstractmethod
    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d] float32 -> the routing dict described in the class docstring."""


class LinearGateRouter(Router):
    """Routers whose logits are ``x @ weight`` with weight [d, S] (Switch init)."""

    def weight_specs(self) -> Dict[str, ParamSpec]:
        c = self.config
        return {"weight": ParamSpec((c.d_model, c.num_experts), truncated_normal_init(c.router_std))}

    def loss_coefs(self) -> Dict[str, float]:
        return {"balance": self.config.balance_loss_coef, "z": self.config.z_loss_coef}
