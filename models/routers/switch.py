"""Switch Transformer router (Fedus et al.): top-1 of softmax(x W), weight = that probability
(never renormalised), Switch balance loss and ST-MoE z-loss."""
from __future__ import annotations

from core.errors import ConfigError
from models.routers.registry import register_router
from models.routers.topk import TopKRouter


@register_router("switch")
class SwitchRouter(TopKRouter):
    renormalize_weights = False

    def __init__(self, config, prefix: str = "router.") -> None:
        if config.top_k != 1:
            raise ConfigError(f"moe.top_k={config.top_k}: router 'switch' is top-1, set moe.top_k: 1")
        super().__init__(config, prefix)
