"""Autoregressive sampling from a ``models.transformer.Transformer`` on either backend, with a
KV cache (``Transformer.decode``): the prompt is run once, then one token per step.

Sampling runs on the host with numpy from one seed, so a seed gives the same text on both
frameworks whenever their logits agree: temperature (0 = greedy), then top-k, then top-p
(the smallest set of most likely tokens whose probability reaches p).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from models.errors import ConfigError
from models.transformer import Transformer


def next_token_probs(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """logits [B, V] -> sampling probabilities [B, V] (one-hot on the argmax when
    temperature is 0; top_k 0 keeps every token)."""
    logits = np.asarray(logits, np.float64)
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ConfigError(f"sampling: temperature={temperature} must be >= 0, top_p={top_p} in (0, 1], "
                          f"top_k={top_k} >= 0")
    if temperature == 0:
        return np.eye(logits.shape[-1])[logits.argmax(-1)]
    scaled = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = np.sort(scaled, -1)[:, -top_k][:, None]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if top_p < 1:
        order = np.argsort(-probs, -1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, -1)
        before = np.cumsum(sorted_probs, -1) - sorted_probs  # mass of the more likely tokens
        keep = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, -1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    return probs


@dataclass
class Generation:
    """tokens [B, prompt + new]; ``mean_true_experts_per_token`` over the generated tokens
    and MoE layers (None for a dense model)."""

    tokens: np.ndarray
    new_tokens: int
    seconds: float
    mean_true_experts_per_token: Optional[float]

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens * self.tokens.shape[0] / max(self.seconds, 1e-9)


class Decoder:
    """A model's weights held by a backend module (``TorchModule``/``MindSporeModule``, e.g.
    from ``backends.runtime.Runtime.module``), read without gradients, and its KV-cached
    forward. Refuses (one line) routers that cannot decode."""

    def __init__(self, model: Transformer, module) -> None:
        for layer in model.moe_layers[:1]:
            layer.router.require_causal()
        self.ops = getattr(module, "backend_ops", None) or module.ops
        self.params = {name: self.ops.stop_gradient(value) for name, value in module.params().items()}
        self.model = model

    def step(self, tokens: np.ndarray, cache=None):
        """tokens [B, S] after the cached positions -> (logits [B, S, V] numpy, aux, cache)."""
        x = self.ops.tensor(np.asarray(tokens, np.int32))
        self.model.check_decode(x, cache)
        logits, aux, cache = self.model.decode(self.ops, self.params, x, cache)
        return self.ops.to_numpy(logits), aux, cache

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, eos_id: Optional[int] = None) -> Generation:
        """Sample ``max_new_tokens`` after each prompt (prompts of equal length); stops early
        when every row has produced ``eos_id``."""
        if len({len(p) for p in prompts}) != 1 or not prompts[0]:
            raise ConfigError("generate: prompts must be non-empty and of equal length (one batch)")
        rng = np.random.default_rng(seed)
        tokens = np.asarray(prompts, np.int64)
        finished = np.zeros(len(prompts), bool)
        loads: List[float] = []
        start = time.perf_counter()
        logits, _, cache = self.step(tokens)
        for _ in range(max_new_tokens):
            probs = next_token_probs(logits[:, -1], temperature, top_k, top_p)
            chosen = np.array([rng.choice(probs.shape[-1], p=row) for row in probs])
            tokens = np.concatenate([tokens, chosen[:, None]], 1)
            finished |= chosen == eos_id
            if finished.all() or tokens.shape[1] - len(prompts[0]) == max_new_tokens:
                break
            logits, aux, cache = self.step(chosen[:, None], cache)
            if "mean_true_experts_per_token" in aux:
                loads.append(float(self.ops.to_numpy(aux["mean_true_experts_per_token"])))
        seconds = time.perf_counter() - start
        return Generation(tokens, tokens.shape[1] - len(prompts[0]), seconds,
                          float(np.mean(loads)) if loads else None)
