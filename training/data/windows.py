"""Training windows over token streams and their seeded train/validation split.

A window of length S+1 starts every S tokens, so each token is a prediction target once;
windows never cross from one source into the next.
"""
from __future__ import annotations

import zlib
from typing import List, Sequence, Tuple

import numpy as np

from core.errors import ConfigError


def window_starts(length: int, seq_len: int) -> np.ndarray:
    """Starts of the windows [s, s + seq_len + 1) that fit in ``length`` tokens."""
    return np.arange((length - 1) // seq_len, dtype=np.int64) * seq_len


def split_windows(lengths: Sequence[int], labels: Sequence[str], seq_len: int, val_fraction: float,
                  seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train starts, validation starts) into the concatenation of streams of ``lengths``.

    Each source gives round(val_fraction * n) (at least 1) of its n windows, drawn with a
    generator seeded by (seed, crc32(label)), to validation, so every domain is evaluated
    and adding a source leaves the others' splits unchanged. Validation windows are then
    put in one seeded order (evaluation reads them from the start)."""
    train: List[np.ndarray] = []
    val: List[np.ndarray] = []
    offset = 0
    for length, label in zip(lengths, labels):
        starts = window_starts(length, seq_len)
        if len(starts) < 2:
            raise ConfigError(f"data.seq_len={seq_len}: {label} has only {length} tokens, fewer than the "
                              f"{2 * seq_len + 1} needed for one training and one validation window")
        order = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))]).permutation(starts)
        n_val = min(len(starts) - 1, max(1, round(val_fraction * len(starts))))
        val.append(order[:n_val] + offset)
        train.append(np.sort(order[n_val:]) + offset)
        offset += length
    val_starts = np.random.default_rng([seed, len(lengths)]).permutation(np.concatenate(val))
    return np.concatenate(train), val_starts
