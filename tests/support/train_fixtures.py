"""A tiny MoE regression problem for train-step tests: a fixed batch and an objective
(mean squared error plus the layer's router losses) written once on ``F``."""
from __future__ import annotations

import numpy as np

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer


def tiny_layer(**overrides) -> MoELayer:
    settings = dict(d_model=8, ffn_hidden=16, num_experts=4, top_k=2, expert_init_std=0.2)
    settings.update(overrides)
    return MoELayer(MoEConfig(**settings))


def regression_objective(F, outputs, target):
    """outputs = (y [B, S, d], aux), target [B, S, d] -> (mse + aux loss, metrics)."""
    y, aux = outputs
    error = y - target
    mse = F.mean(error * error)
    return mse + aux["loss"], {"mse": mse, "tokens_per_expert": aux["tokens_per_expert"],
                               "dropped_fraction": aux["dropped_fraction"]}


def fixed_batch(seed: int = 0, shape=(2, 6, 8)):
    """(x, target) float32 arrays; the target is a fixed function of x plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    target = (np.tanh(x) * 0.8 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return x, target

