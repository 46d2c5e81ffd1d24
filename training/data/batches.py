"""Batches of windows: an endless, resumable training iterator and fixed validation batches."""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import numpy as np

from core.errors import ConfigError

Batch = Tuple[np.ndarray, np.ndarray]


def gather(tokens: np.ndarray, domains: np.ndarray, starts: np.ndarray, seq_len: int) -> Batch:
    """Windows at ``starts`` -> (tokens [B, S+1] int32, domain_ids [B, S] int32); the domain
    of position s is that of input token s (the document it came from)."""
    index = starts[:, None] + np.arange(seq_len + 1)
    return tokens[index].astype(np.int32), domains[index[:, :-1]].astype(np.int32)


class BatchIterator:
    """Endless training batches. Epoch e visits every training window once in the order
    ``default_rng([seed, e]).permutation``; a batch that runs past an epoch's end continues
    with the next epoch. The position is ``state_dict()``: {epoch, index, seed, dataset},
    a few ints and a string that restore exactly (``dataset`` guards against restoring onto
    other data). ``stream`` > 0 (a node's stream, ``node_placement``) draws its own orders:
    ``default_rng([seed, stream, e])``."""

    def __init__(self, tokens: np.ndarray, domains: np.ndarray, starts: np.ndarray, seq_len: int,
                 batch_size: int, seed: int, dataset: str, stream: int = 0) -> None:
        if batch_size < 1:
            raise ConfigError(f"train.batch_size: expected an integer >= 1, got {batch_size!r}")
        self.tokens, self.domains, self.starts = tokens, domains, starts
        self.seq_len, self.batch_size, self.seed, self.dataset = seq_len, batch_size, seed, dataset
        self.stream = stream
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, np.zeros(0, np.int64)

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng(self._key()).permutation(len(self.starts))
            self._order_epoch = self.epoch
        return self._order

    def _key(self) -> List[int]:
        return [self.seed, self.stream, self.epoch] if self.stream else [self.seed, self.epoch]

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        picks: List[np.ndarray] = []
        wanted = self.batch_size
        while wanted:
            if self.index == len(self.starts):
                self.epoch, self.index = self.epoch + 1, 0
            take = min(wanted, len(self.starts) - self.index)
            picks.append(self._epoch_order()[self.index:self.index + take])
            self.index += take
            wanted -= take
        return gather(self.tokens, self.domains, self.starts[np.concatenate(picks)], self.seq_len)

    def state_dict(self) -> Dict[str, object]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "dataset": self.dataset}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Continue from a ``state_dict()``; the next batch equals the one that would have come."""
        if state.get("dataset") != self.dataset:
            raise ConfigError(f"data position: saved for dataset {state.get('dataset')!r}, but this run's data "
                              f"is {self.dataset!r} (data settings or text changed since the checkpoint)")
        epoch, index = int(state["epoch"]), int(state["index"])
        if not 0 <= index <= len(self.starts) or epoch < 0:
            raise ConfigError(f"data position: index {index} outside 0..{len(self.starts)} training windows")
        self.epoch, self.index, self.seed = epoch, index, int(state["seed"])


def validation_batches(tokens: np.ndarray, domains: np.ndarray, starts: np.ndarray, seq_len: int,
                       batch_size: int, num_batches: int) -> List[Batch]:
    """The first ``num_batches`` batches of the validation windows in their fixed order,
    wrapping to the start when there are fewer windows (every batch has ``batch_size`` rows)."""
    picks = np.arange(batch_size * num_batches) % len(starts)
    return [gather(tokens, domains, starts[picks[i * batch_size:(i + 1) * batch_size]], seq_len)
            for i in range(num_batches)]
