"""Parameter specifications: what a component owns, independent of any framework.

A component lists ``ParamSpec`` entries; a backend shell turns them into framework
parameters. Initial values are drawn with numpy from one seed, so both backends start
from the same weights.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy.stats import truncnorm

Initializer = Callable[[np.random.Generator, Tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class ParamSpec:
    """shape, how to initialise it, whether the optimizer updates it, whether it stays
    float32 when the model runs in bf16/fp16 (router weights: selective precision), and
    whether axis 0 is an expert axis split over expert-parallel ranks (``parallel.sharding``)."""

    shape: Tuple[int, ...]
    init: Initializer
    trainable: bool = True
    float32: bool = False
    expert_sharded: bool = False


def normal_init(std: float) -> Initializer:
    """N(0, std^2)."""
    return lambda rng, shape: (rng.standard_normal(shape) * std).astype(np.float32)


def truncated_normal_init(std: float) -> Initializer:
    """Normal truncated at two standard deviations (Switch router init uses
    std = sqrt(0.1 / fan_in))."""
    return lambda rng, shape: (truncnorm.rvs(-2.0, 2.0, size=shape, random_state=rng) * std).astype(np.float32)


def constant_init(value: float) -> Initializer:
    return lambda rng, shape: np.full(shape, value, dtype=np.float32)


def init_params(specs: Dict[str, ParamSpec], seed: int,
                select: Optional[Callable[[str, np.ndarray], np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """Draw every parameter in name order from one generator: same seed, same weights.
    ``select(name, value)``, applied to each parameter as soon as it is drawn, keeps what
    a rank holds (its experts' slice): peak memory is then that plus one whole parameter,
    not the whole model."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(specs):
        value = specs[name].init(rng, specs[name].shape)
        out[name] = value if select is None else select(name, value)
    return out


def prefixed(prefix: str, specs: Dict[str, ParamSpec]) -> Dict[str, ParamSpec]:
    """Names under a component's prefix (``"layers.0.moe.router."`` + ``"weight"``).
    Components read ``params[prefix + name]``: constant string keys, which GRAPH_MODE
    compiles (a dict comprehension over names does not)."""
    return {prefix + name: spec for name, spec in specs.items()}


def kept_float32(specs: Dict[str, ParamSpec]) -> Dict[str, ParamSpec]:
    """The same specs, marked to stay float32 whatever the model dtype."""
    return {name: replace(spec, float32=True) for name, spec in specs.items()}
