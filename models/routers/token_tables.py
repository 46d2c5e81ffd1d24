"""Fixed token-id -> expert tables for routers without a learned gate (hash layers, PanGu-Sigma
RRE), built on the host with numpy, and the host-side checks of the ids they look up.

One table per MoE layer by default: ``table_rng`` seeds layer i's table from
(``router_options.seed``, i), so a token id's experts in different layers are independent
draws; ``router_options.shared_table: true`` gives every layer the one table seeded by
``seed`` alone (the same expert index for a token id in every layer)."""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError
from core.params import ParamSpec
from core.rules import FLAG, integer, setting


@dataclass
class TokenTableOptions:
    """What every token-table router reads: ``vocab_size`` (table rows; required), ``seed``
    and ``shared_table`` (``table_rng``)."""

    vocab_size: int = setting(0, integer(1))
    seed: int = setting(0, integer(0))
    shared_table: bool = setting(False, FLAG)


def table_rng(seed: int, layer_index: int, shared: bool) -> np.random.Generator:
    """The generator a token table is drawn from: ``seed`` alone when every MoE layer shares
    one table, else (``seed``, ``layer_index``) (the index of the model layer)."""
    return np.random.default_rng(seed if shared else [seed, layer_index])


def random_table(vocab_size: int, num_experts: int, rng: np.random.Generator) -> np.ndarray:
    """[vocab_size] expert per token id: a random permutation of the ids dealt round-robin, so
    every expert gets floor or ceil(vocab_size / num_experts) ids."""
    return (rng.permutation(vocab_size) % num_experts).astype(np.int64)


def table_spec(table: np.ndarray) -> ParamSpec:
    """A fixed integer table as a non-trainable parameter (float32, exact below 2**24), so it
    travels with checkpoints; routers cast it back to the index dtype."""
    values = np.asarray(table, np.float32)
    return ParamSpec(values.shape, lambda rng, shape: values.copy(), trainable=False)


def frequency_balanced_table(counts: np.ndarray, num_experts: int, rng: np.random.Generator) -> np.ndarray:
    """[V] expert per token id so that every expert gets about the same frequency mass
    (Roller et al. 2021, balanced hash): greedy largest-first bin packing, each counted id in
    order of decreasing count (ids of equal count in an order drawn from ``rng``) goes to the
    expert with the least mass so far, so max mass - min mass <= max(counts) whatever the
    draw. Ids with count 0 carry no measured mass: they go to the expert with the fewest ids
    (ties: lower index), so unseen ids spread evenly."""
    order = np.lexsort((rng.permutation(len(counts)), -counts))
    table = np.zeros(len(counts), np.int64)
    heap = [(0, e) for e in range(num_experts)]
    for token in order[counts[order] > 0]:
        mass, expert = heapq.heappop(heap)
        table[token] = expert
        heapq.heappush(heap, (mass + int(counts[token]), expert))
    ids = np.bincount(table[counts > 0], minlength=num_experts)
    heap = [(int(ids[e]), e) for e in range(num_experts)]
    for token in order[counts[order] == 0]:
        size, expert = heapq.heappop(heap)
        table[token] = expert
        heapq.heappush(heap, (size + 1, expert))
    return table


def load_token_counts(path: str, vocab_size: int) -> np.ndarray:
    """Read a token-count file: one ``token_id count`` pair per line (ids not listed count 0).
    -> [vocab_size] int64. Any problem is a ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"moe.router_options.counts_file={path!r} cannot be read: {error.__class__.__name__}") from None
    counts = np.zeros(vocab_size, np.int64)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, count = (int(field) for field in line.split())
        except ValueError:
            token, count = -1, -1
        if not 0 <= token < vocab_size or count < 0:
            raise ConfigError(f"moe.router_options.counts_file={path!r} line {number}: expected 'token_id count' "
                              f"with 0 <= token_id < vocab_size={vocab_size} and count >= 0, got {line.strip()!r}")
        counts[token] += count
    return counts


def check_ids(values: Any, name: str, limit: int, setting: str) -> None:
    """ConfigError unless every value of the integer tensor ``values`` is in [0, limit).
    Reads the tensor's min and max on the host (both frameworks' tensors have them)."""
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= limit:
        raise ConfigError(f"{name} range from {low} to {high}; they must lie in [0, {setting}={limit})")
