"""The next token from a row of logits, on the host with numpy: temperature (0 = greedy: the
argmax, nothing else computed), then top-k, then top-p (the smallest set of most likely tokens
whose probability reaches p), then one uniform draw from the generator per row.

Nothing here is larger than the vocabulary V: the logits are read in their own dtype (no
float64 copy of the full vocabulary), top-k picks its k tokens with a partition, not a sort,
and top-p sorts only the most likely tokens: those top-k kept, or without top-k the smallest
set found by partitions whose mass reaches p (sorting all 49,152 of SmolLM2's tokens took
21 ms a token). A draw walks the kept tokens in id order, so the same seed picks the same
token from two sets of logits (torch, MindSpore) whose probabilities differ in rounding only.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from core.errors import ConfigError


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """One line naming the bad setting."""
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ConfigError(f"sampling: temperature={temperature} must be >= 0, top_p={top_p} in (0, 1], "
                          f"top_k={top_k} >= 0")


def candidates(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0
               ) -> Tuple[np.ndarray, np.ndarray]:
    """logits [V] (temperature > 0) -> (ids [K] ascending, probs [K] summing to 1): the
    tokens top-k (0: all) and then top-p keep, with p_i = softmax(logits / temperature)
    renormalised over them. Among equal probabilities top-p keeps the lower ids first."""
    vocab = logits.shape[-1]
    ids = np.sort(np.argpartition(logits, vocab - top_k)[vocab - top_k:]) if 0 < top_k < vocab else None
    scaled = (logits if ids is None else logits[ids]) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if ids is None:
        ids = np.arange(vocab)
    if top_p < 1:
        keep = nucleus(probs, top_p)
        ids, probs = ids[keep], probs[keep] / probs[keep].sum()
    return ids, probs


def nucleus(probs: np.ndarray, top_p: float, first: int = 64) -> np.ndarray:
    """probs [K] -> the positions (ascending) of the tokens whose more likely tokens (ties
    broken by lower position) hold less than ``top_p`` of the mass. Sorts only the tokens at
    or above the m-th largest probability (a prefix of the full order, ties included), m =
    ``first``, 4m, ... until their mass reaches ``top_p``: then no token outside is kept."""
    count = first
    while True:
        if count >= len(probs):
            likely = np.arange(len(probs))
        else:
            likely = np.flatnonzero(probs >= np.partition(probs, len(probs) - count)[len(probs) - count])
        order = likely[np.argsort(-probs[likely], kind="stable")]
        mass = np.cumsum(probs[order])
        if mass[-1] >= top_p or len(likely) == len(probs):
            return np.sort(order[mass - probs[order] < top_p])
        count *= 4


def sample_tokens(logits: np.ndarray, temperature: float, top_k: int, top_p: float,
                  rng: np.random.Generator) -> np.ndarray:
    """logits [B, V] -> next token ids [B] int64: the argmax when temperature is 0 (the
    generator is not used), else one draw per row from ``candidates``."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(-1).astype(np.int64)
    tokens = np.empty(logits.shape[0], np.int64)
    for row, values in enumerate(logits):
        ids, probs = candidates(values, temperature, top_k, top_p)
        cumulative = np.cumsum(probs)
        tokens[row] = ids[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right")), len(ids) - 1)]
    return tokens
