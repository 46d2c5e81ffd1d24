"""RMSNorm (Zhang & Sennrich 2019), as in Llama: y = x / sqrt(mean(x^2) + eps) * weight."""
from __future__ import annotations

from typing import Dict

from core.params import ParamSpec, constant_init


class RMSNorm:
    """x [..., d] -> [..., d]. The statistic is computed in float32 whatever the model dtype;
    ``weight`` [d] starts at ones. HF name: ``<prefix>weight``."""

    def __init__(self, d_model: int, eps: float, prefix: str) -> None:
        self.d_model = d_model
        self.eps = eps
        self.prefix = prefix

    def param_specs(self) -> Dict[str, ParamSpec]:
        return {self.prefix + "weight": ParamSpec((self.d_model,), constant_init(1.0))}

    def forward(self, F, params: dict, x):
        xf = F.cast(x, F.float32)
        normed = xf * F.rsqrt(F.mean(xf * xf, -1, True) + self.eps)
        return params[self.prefix + "weight"] * F.cast(normed, x.dtype)
