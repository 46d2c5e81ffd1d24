"""Which slice of each parameter a rank holds: expert stacks (``ParamSpec.expert_sharded``,
axis 0 = expert) are split contiguously over the EP group; everything else is replicated.
Host-side numpy, used to place initial weights, checkpoints and optimizer state."""
from __future__ import annotations

from typing import Dict

import numpy as np

from core.layout import expert_range
from core.params import ParamSpec


def local_values(values: Dict[str, np.ndarray], specs: Dict[str, ParamSpec], ep_size: int,
                 ep_rank: int) -> Dict[str, np.ndarray]:
    """Full parameters (every expert) -> this rank's: expert stacks cut to its experts."""
    out = {}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is not None and spec.expert_sharded and ep_size > 1:
            first, end = expert_range(value.shape[0], ep_size, ep_rank)
            value = value[first:end]
        out[name] = value
    return out
