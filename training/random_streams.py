"""Every random number a training run draws, derived from the run's ``seed`` by name, so
no stream depends on what another process or an earlier step drew:

- **Routing noise** (the U[0, 1) values of the stochastic routers, ``skip`` and ``balanced``)
  is drawn on the host, for each sequence of the global batch, from
  (``seed``, purpose, step, the sequence's row in the global batch): ``routing_noise``. A rank
  draws only its own rows, so the noise of a sequence is the same at any world size, in one
  process or many, on either framework, and after any resume (nothing to checkpoint).
  Validation batches draw theirs from (``seed``, validation, batch index, row): every
  validation of a run sees the same noise.
- **Each process's framework, numpy and Python generators** are seeded with
  ``process_seed(seed, rank)`` (nothing in training draws from them any more; they are
  still saved per rank in checkpoints and restored, ``training.distributed``).

Streams of different seeds never overlap: every stream is ``numpy.random.SeedSequence``
with the seed as entropy and the rest as its spawn key (seed 0 rank 1 and seed 1 rank 0
are unrelated streams, where ``seed + rank`` made them equal).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

TRAIN, VALIDATION, PROCESS = 1, 2, 3  # stream kinds (spawn key's first entry)


def _sequence(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key))


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s framework, numpy and Python generators: a 31-bit value
    (MindSpore's ``set_seed`` limit) derived from (``seed``, ``rank``)."""
    return int(_sequence(seed, PROCESS, rank).generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


def routing_noise(seed: int, kind: int, step: int, rows: Tuple[int, int], seq_len: int, layers: int,
                  width: int) -> np.ndarray:
    """U[0, 1) float32 [layers, end - start, seq_len, width] for rows ``[start, end)`` of the
    global batch of ``step`` (``kind``: TRAIN or VALIDATION); row g's values come from
    (``seed``, ``kind``, ``step``, g) alone."""
    start, end = rows
    out = np.empty((layers, end - start, seq_len, width), np.float32)
    for i, row in enumerate(range(start, end)):
        generator = np.random.Generator(np.random.Philox(_sequence(seed, kind, step, row)))
        out[:, i] = generator.random((layers, seq_len, width), np.float32)
    return out
