"""Which part of a group of parameters a rank's distributed optimizer owns (ZeRO-1, Megatron's
distributed optimizer): the parameters, in the optimizer's order, laid end to end in one flat
buffer, zero-padded to a multiple of the group size G; rank r of the group owns elements
[r S, (r + 1) S) with S = ceil(N / G). Written on the op vocabulary ``F``; the host-side
(numpy) twins place and read back checkpoint values."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np


class FlatShards:
    """Parameters ``names`` with ``shapes`` (this rank's local shapes) sharded over a group of
    ``size`` ranks in which this rank is ``rank``; ``group``: the group's handle."""

    def __init__(self, names: Sequence[str], shapes: Sequence[Tuple[int, ...]], group, size: int, rank: int) -> None:
        self.names = tuple(names)
        self.shapes = [tuple(int(n) for n in s) for s in shapes]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.group, self.size, self.rank = group, int(size), int(rank)
        self.total = sum(self.sizes)
        self.shard = -(-self.total // self.size)  # S = ceil(N / G)
        self.padded = self.shard * self.size
        self.start = self.rank * self.shard

    def flatten(self, F, tensors: Sequence):
        """Tensors of ``shapes`` -> one float32 vector [G S], zero-padded."""
        parts = [F.reshape(F.cast(t, F.float32), (-1,)) for t in tensors]
        if self.padded > self.total:
            parts.append(F.zeros((self.padded - self.total,), F.float32))
        return F.concat(parts, 0)

    def split(self, F, flat) -> List:
        """A vector [>= N] -> tensors of ``shapes`` (padding dropped)."""
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(F.reshape(flat[start:start + size], shape))
            start += size
        return out

    def reduce_scatter(self, F, tensors: Sequence):
        """Tensors of every rank of the group -> this rank's shard [S] of their sum."""
        flat = self.flatten(F, tensors)
        return flat if self.size == 1 else F.reduce_scatter(flat, self.group)

    def own(self, F, tensors: Sequence):
        """This rank's shard [S] of tensors that every rank of the group holds alike (only
        the pieces inside the shard are copied, never the whole flat buffer)."""
        parts, offset, end = [], 0, self.start + self.shard
        for tensor, size in zip(tensors, self.sizes):
            low, high = max(self.start, offset), min(end, offset + size)
            if low < high:
                parts.append(F.reshape(F.cast(tensor, F.float32), (-1,))[low - offset:high - offset])
            offset += size
        filled = max(0, min(end, self.total) - self.start)
        if filled < self.shard:
            parts.append(F.zeros((self.shard - filled,), F.float32))
        return F.concat(parts, 0)

    def all_gather(self, F, shard) -> List:
        """Every rank's shard [S] -> the whole tensors of ``shapes``."""
        return self.split(F, shard if self.size == 1 else F.all_gather(shard, self.group))

    def own_numpy(self, values: Dict[str, np.ndarray], prefix: str = "") -> np.ndarray:
        """Host values ``prefix + name`` (whole, this rank's local shapes) -> this rank's
        float32 shard [S]."""
        flat = np.zeros(self.padded, np.float32)
        if self.total:
            flat[:self.total] = np.concatenate([np.asarray(values[prefix + n], np.float32).reshape(-1)
                                                for n in self.names])
        return flat[self.start:self.start + self.shard]
