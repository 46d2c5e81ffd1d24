"""Every registered router at test size, driven by the registry and the configs: the MoE layer
built from ``configs/<name>.yaml``'s ``moe`` section with its widths shrunk, and a 2 x 8
token batch with the side inputs and routing noise that router takes. The registry-driven
tests (tests/common/test_router_registry.py, tests/backend/test_registered_routers.py,
tests/parity/test_routers.py) run every router through these, so a new router needs only
its file, its registry line and its config."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers import ROUTERS
from tests.support.harness import numpy_weights, random_inputs
from training.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROUTER_NAMES = tuple(sorted(ROUTERS))
TEST_SIZE = dict(d_model=16, ffn_hidden=24, expert_init_std=0.2, router_init_std=0.5)  # O(1) outputs, confident gates
BATCH = (2, 8)
ID_BOUNDS = {"token_ids": "vocab_size", "domain_ids": "num_domains"}  # the router option each side input lies below


def router_config_path(name: str) -> Path:
    return CONFIGS / f"{name}.yaml"


def router_config(name: str) -> MoEConfig:
    """The ``moe`` section of ``configs/<name>.yaml`` with TEST_SIZE widths (a shared expert, if
    any, as wide as the experts); experts, top_k, dispatch and router options as configured."""
    moe = load_config(router_config_path(name)).moe
    shared = TEST_SIZE["ffn_hidden"] if moe.shared_expert_hidden else 0
    return replace(moe, shared_expert_hidden=shared, **TEST_SIZE).validate()


def router_case(name: str, seed: int = 2) -> Tuple[MoELayer, Dict[str, np.ndarray], np.ndarray, Dict[str, np.ndarray]]:
    """(layer, weights, x [2, 8, d], context) for router ``name``. The context holds the side
    inputs the router lists in ``needs_context``, drawn below the router option that bounds
    them, and U[0, 1) routing noise for a stochastic router (one that names a
    ``noise_width``). At the default seed every capacity-limited router of the configs drops
    assignments, so the capacity bound is exercised."""
    layer = MoELayer(router_config(name))
    router = layer.router
    rng = np.random.default_rng(seed + 1)
    context = {key: rng.integers(0, getattr(router.options, ID_BOUNDS[key]), BATCH) for key in router.needs_context}
    if hasattr(router, "noise_width"):
        context["routing_noise"] = rng.uniform(size=BATCH + (router.noise_width,)).astype(np.float32)
    x = random_inputs(BATCH + (layer.config.d_model,), seed=seed)
    return layer, numpy_weights(layer, seed=seed), x, context
