"""Switch Transformer router (Fedus et al.): top-1 of softmax(x W), weight = that probability
(never renormalised), Switch balance loss and ST-MoE z-loss."""
from __future__ import annotations

from models.routers.registry import register_router
from models.routers.topk import TopKRouter


@register_router("switch")
class SwitchRouter(TopKRouter):
    renormalize_weights = False
    top1_only = True
