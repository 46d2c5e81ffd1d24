"""Autoregressive sampling from a ``models.transformer.Transformer`` on either backend, with a
KV cache: the prompt is run once (``Transformer.prefill``, uncompiled: its length varies),
then one token per step into fixed-length caches (``Transformer.decode_at``), a step whose
shapes never change: MindSpore compiles it once with ``ms.jit`` (``execution``: auto), torch
runs it eagerly (``torch.compile`` with execution compiled).

The next token is chosen on the host (``training.sampling``: greedy, or temperature, top-k,
top-p from one seed), so a seed gives the same text on both frameworks whenever their logits
agree.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from backends.train_step import EXECUTIONS, forward_compiles
from core.errors import ConfigError
from models.transformer import Transformer
from training.sampling import check_sampling, sample_tokens

CACHE_BLOCK = 64  # cache lengths are rounded up to a multiple of this: a compiled step serves many lengths


def cache_length(positions: int, max_seq_len: int) -> int:
    """Slots for ``positions`` positions: rounded up to a multiple of CACHE_BLOCK, at most
    max_seq_len."""
    return min(-(-positions // CACHE_BLOCK) * CACHE_BLOCK, max_seq_len)


def step_function(model: Transformer):
    """``Transformer.decode_at`` on flat arguments, as compiled code takes them:
    step(F, params, tokens [B, 1], position, k_0, v_0, k_1, ...) -> (logits [B, V], mean true
    experts per token (0 for a dense model), k_0, v_0, k_1, ...)."""
    blocks, moe = len(model.blocks), bool(model.moe_layers)

    def step(F, params, tokens, position, *flat):
        cache = ()
        for i in range(blocks):
            cache = cache + ((flat[2 * i], flat[2 * i + 1]),)
        logits, aux, cache = model.decode_at(F, params, tokens, position, cache)
        out = (F.reshape(logits, (logits.shape[0], logits.shape[2])),
               aux["mean_true_experts_per_token"] if moe else F.zeros((), F.float32))
        for k, v in cache:
            out = out + (k, v)
        return out
    return step


@dataclass
class Generation:
    """``rows``: one int array per prompt, the prompt then its sampled tokens (fewer than
    asked when the batch stopped at ``eos_id``); ``new_tokens``: sampled tokens over all rows;
    ``mean_true_experts_per_token``: over the tokens decoded after the prefill, all MoE layers
    (None for a dense model); ``prefill_seconds``: the prompt's forward and the first sample;
    ``decode_steps``: the one-token steps after it (all rows at once)."""

    rows: List[np.ndarray]
    new_tokens: int
    seconds: float
    mean_true_experts_per_token: Optional[float]
    prefill_seconds: float = 0.0
    decode_steps: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)

    @property
    def decode_seconds(self) -> float:
        """After the prefill: the one-token steps and their sampling."""
        return self.seconds - self.prefill_seconds

    @property
    def ms_per_step(self) -> float:
        """Milliseconds per decode step (one token per row), sampling included."""
        return 1e3 * self.decode_seconds / max(self.decode_steps, 1)


class Decoder:
    """A model's weights held by a backend module (``TorchModule``/``MindSporeModule``, e.g.
    from ``backends.runtime.Runtime.module``), read without gradients, and its KV-cached
    forward. ``execution``: ``auto`` (the decode step compiled where the backend compiles by
    default: MindSpore), ``compiled`` or ``eager``; never compiled for a component that says
    ``compiles = False`` (LoRA-MoE). Refuses (one line) routers that cannot decode."""

    def __init__(self, model: Transformer, module, execution: str = "auto") -> None:
        for layer in model.moe_layers[:1]:
            layer.router.require_causal()
        if execution not in EXECUTIONS:
            raise ConfigError(f"execution={execution!r}: choose from {', '.join(EXECUTIONS)}")
        self.compiled = forward_compiles(1, module.component) and (
            execution == "compiled" or execution == "auto" and module.compiles_by_default)
        self.ops = module.ops
        self.model = model
        self._decode = module.inference(model.decode, False)
        self._prefill = module.inference(model.prefill, False)
        self._step = module.inference(step_function(model), self.compiled)

    def step(self, tokens: np.ndarray, cache=None):
        """tokens [B, S] after the cached positions -> (logits [B, S, V] numpy, aux, cache)."""
        x = self.ops.tensor(np.asarray(tokens, np.int32))
        self.model.check_decode(x, cache)
        logits, aux, cache = self._decode(x, cache)
        return self.ops.to_numpy(logits), aux, cache

    def prefill(self, tokens: np.ndarray, length: int):
        """A prompt, tokens [B, S] (checked by the caller), into fixed-length caches for
        ``step_at`` -> (logits of its last position [B, V] numpy, cache: a flat tuple k_0, v_0,
        k_1, ..., each [B, length, Hkv, D])."""
        logits, _, cache = self._prefill(self.ops.tensor(tokens, self.ops.index_dtype), length)
        return self.ops.to_numpy(logits)[:, -1], tuple(x for kv in cache for x in kv)

    def step_at(self, tokens: np.ndarray, position: int, cache: tuple):
        """One token per row, tokens [B, 1], at ``position`` < the cache length (compiled where
        ``self.compiled``) -> (logits [B, V] numpy, mean true experts per token (a tensor; 0
        for a dense model), cache with ``position`` written)."""
        logits, load, *cache = self._step(self.ops.tensor(tokens, self.ops.index_dtype),
                                          self.ops.tensor(np.asarray(position), self.ops.index_dtype), *cache)
        return self.ops.to_numpy(logits), load, tuple(cache)

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
        check_sampling(temperature, top_k, top_p)
        width = int(lengths.max()) + max_new_tokens
        tokens = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):
            tokens[row, :len(prompt)] = prompt
        if width - 1 > self.model.config.max_seq_len:  # the last sample is never fed back
            raise ConfigError(f"generate: the longest prompt ({lengths.max()} tokens) and max_new_tokens="
                              f"{max_new_tokens} need {width - 1} positions; model.max_seq_len="
                              f"{self.model.config.max_seq_len}")
        self.model.check_decode(self.ops.tensor(tokens[:, :lengths.max()], self.ops.index_dtype), None)
        rng = np.random.default_rng(seed)
        position = int(lengths.min())
        finished = np.zeros(len(prompts), bool)
        loads: List[float] = []
        start = time.perf_counter()
        logits, cache = self.prefill(tokens[:, :position], cache_length(width - 1, self.model.config.max_seq_len))
        prefill_seconds = None
        while True:
            sampled = sample_tokens(logits, temperature, top_k, top_p, rng)
            if prefill_seconds is None:
                prefill_seconds = time.perf_counter() - start
            sampling = position >= lengths
            tokens[:, position] = np.where(sampling, sampled, tokens[:, position])
            finished |= sampling & (sampled == eos_id)
            position += 1
            if finished.all() or position == width:
                break
            logits, load, cache = self.step_at(tokens[:, position - 1:position], position - 1, cache)
            if self.model.moe_layers:
                loads.append(float(self.ops.to_numpy(load)))
        seconds = time.perf_counter() - start
        ends = np.minimum(lengths + max_new_tokens, position)
        return Generation([tokens[row, :end] for row, end in enumerate(ends)], int((ends - lengths).sum()), seconds,
                          float(np.mean(loads)) if loads else None, prefill_seconds, position - 1 - int(lengths.min()))
