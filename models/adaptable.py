"""Linear projections that may carry adapters (LoRA-MoE), shared by attention and FFNs."""
from __future__ import annotations


class Adaptable:
    """A component whose linear projections (weights ``<prefix><name>.weight``, [out, in]) may
    carry adapters: ``adapters[name].apply(F, params, x, y)`` returns the adapted output of
    y = x W^T (``models.lora_moe``). Without adapters ``project`` is ``F.linear``."""

    prefix: str
    adapters: dict

    def project(self, F, params: dict, x, name: str):
        y = F.linear(x, params[self.prefix + name + ".weight"])
        return y if name not in self.adapters else self.adapters[name].apply(F, params, x, y)
