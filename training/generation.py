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

from core.errors import ConfigError
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
    """``rows``: one int array per prompt, the prompt then its sampled tokens (fewer than
    asked when the batch stopped at ``eos_id``); ``new_tokens``: sampled tokens over all rows;
    ``mean_true_experts_per_token``: over the tokens decoded after the prefill, all MoE layers
    (None for a dense model)."""

    rows: List[np.ndarray]
    new_tokens: int
    seconds: float
    mean_true_experts_per_token: Optional[float]

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


class Decoder:
    """A model's weights held by a backend module (``TorchModule``/``MindSporeModule``, e.g.
    from ``backends.runtime.Runtime.module``), read without gradients, and its KV-cached
    forward. Refuses (one line) routers that cannot decode."""

    def __init__(self, model: Transformer, module) -> None:
        for layer in model.moe_layers[:1]:
            layer.router.require_causal()
        self.ops = module.ops
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
        """Sample ``max_new_tokens`` after each prompt; stops early when every row has
        produced ``eos_id``. Prompts may differ in length, with no padding: the batch prefills
        the shortest prompt's length, then decodes one position per step, where a row still
        inside its own prompt takes its next prompt token instead of the sample, so each row's
        logits are exactly those of its own sequence."""
        lengths = np.array([len(prompt) for prompt in prompts], np.int64)
        if not len(prompts) or lengths.min() == 0 or max_new_tokens < 1:
            raise ConfigError(f"generate: needs non-empty prompts and max_new_tokens={max_new_tokens} >= 1")
        rng = np.random.default_rng(seed)
        width = int(lengths.max()) + max_new_tokens
        tokens = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):
            tokens[row, :len(prompt)] = prompt
        position = int(lengths.min())
        finished = np.zeros(len(prompts), bool)
        loads: List[float] = []
        start = time.perf_counter()
        logits, _, cache = self.step(tokens[:, :position])
        while True:
            probs = next_token_probs(logits[:, -1], temperature, top_k, top_p)
            sampled = np.array([rng.choice(probs.shape[-1], p=row) for row in probs])
            sampling = position >= lengths
            tokens[:, position] = np.where(sampling, sampled, tokens[:, position])
            finished |= sampling & (sampled == eos_id)
            position += 1
            if finished.all() or position == width:
                break
            logits, aux, cache = self.step(tokens[:, position - 1:position], cache)
            if "mean_true_experts_per_token" in aux:
                loads.append(float(self.ops.to_numpy(aux["mean_true_experts_per_token"])))
        seconds = time.perf_counter() - start
        ends = np.minimum(lengths + max_new_tokens, position)
        return Generation([tokens[row, :end] for row, end in enumerate(ends)], int((ends - lengths).sum()), seconds,
                          float(np.mean(loads)) if loads else None)
