"""The distributed optimizer (ZeRO-1, Megatron-Core's ``DistributedOptimizer``), written once on
the op vocabulary ``F``: AdamW's moments (and, for a bfloat16/float16 model, the float32
master weights) are sharded over the ranks that hold the same values, a replicated
parameter over the whole world (its data-parallel group), an expert shard over its
expert-data-parallel group (``parallel.flat_shards``). One step:

1. gradients reduce-scattered into this rank's shard (sum over the group, / W: the global
   batch's mean gradient, as ``parallel.gradient_sync``);
2. the global norm from the shards: every element lives in exactly one shard of the world,
   so ||g|| = sqrt(all_reduce_world(sum over own shards of g^2)), one scalar all-reduce;
3. AdamW on the shard (PyTorch's maths: p <- p (1 - lr wd); m <- b1 m + (1 - b1) g;
   v <- b2 v + (1 - b2) g^2; p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps));
4. the parameters all-gathered from the shards.

Per rank the optimizer then keeps 8 / d bytes per float32 parameter (m, v) and 12 / d for a
low-precision one (master, m, v) instead of 8 and 12 (d: the group size). ``state()`` and
``masters()`` gather whole tensors, so checkpoints stay canonical and resume at any size.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from core.layout import ParallelRun
from core.params import ParamSpec
from parallel.flat_shards import FlatShards


class DistributedOptimizer:
    """AdamW over the shards of the trainable parameters ``names`` (the train step's order;
    ``shapes``: this rank's local shapes; ``decayed``: which of them take weight decay) on the
    ranks of ``run``; ``params``: their current values (tensors); ``mixed``: the model is
    bfloat16/float16, so float32 masters of the shards are kept."""

    def __init__(self, F, run: ParallelRun, names: Sequence[str], shapes: Sequence[Tuple[int, ...]],
                 specs: Dict[str, ParamSpec], decayed: Sequence[bool], params: Sequence,
                 betas: Tuple[float, float], eps: float, weight_decay: float, mixed: bool) -> None:
        lay = run.layout
        self.world = lay.world_size
        self.world_group = run.groups["world"]
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.names = tuple(names)
        self.buckets: List[Tuple[List[int], FlatShards, float]] = []
        for expert in (False, True):
            group, size, rank = ((run.groups.get("edp"), lay.edp_size, lay.rank // lay.expert_parallel) if expert
                                 else (self.world_group, lay.world_size, lay.rank))
            for decay in (True, False):
                index = [i for i, n in enumerate(self.names)
                         if bool(specs[n].expert_sharded) == expert and bool(decayed[i]) == decay]
                if index:
                    shards = FlatShards([self.names[i] for i in index], [shapes[i] for i in index], group, size, rank)
                    self.buckets.append((index, shards, float(weight_decay) if decay else 0.0))
        self.exp_avg = [F.zeros((b.shard,), F.float32) for _, b, _ in self.buckets]
        self.exp_avg_sq = [F.zeros((b.shard,), F.float32) for _, b, _ in self.buckets]
        self.master = [b.own(F, [params[i] for i in index]) for index, b, _ in self.buckets] if mixed else None
        self.steps = 0

    def shard_gradients(self, F, grads: Sequence) -> List:
        """Every rank's gradients (``names`` order) -> this rank's shards of the global batch's
        mean gradient, one per bucket."""
        return [b.reduce_scatter(F, [grads[i] for i in index]) * (1.0 / self.world) for index, b, _ in self.buckets]

    def global_norm(self, F, shards: Sequence):
        """The whole model's gradient norm from the shards (each element counted once), float32."""
        square = F.zeros((), F.float32)
        for shard in shards:
            square = square + F.sum(shard * shard)
        return F.sqrt(F.all_reduce(square, self.world_group) if self.world > 1 else square)

    def update(self, F, shards: Sequence, params: Sequence, lr: float, coef: float) -> List:
        """AdamW at ``lr`` on ``shards * coef`` -> the new float32 values of every parameter
        (``names`` order), gathered from the updated shards."""
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = lr / (1.0 - beta1 ** self.steps)
        root_correction = float(np.sqrt(1.0 - beta2 ** self.steps))
        out = [None] * len(self.names)
        for k, ((index, b, decay), shard) in enumerate(zip(self.buckets, shards)):
            g = shard * coef
            p = self.master[k] if self.master is not None else b.own(F, [params[i] for i in index])
            self.exp_avg[k] = self.exp_avg[k] * beta1 + g * (1.0 - beta1)
            self.exp_avg_sq[k] = self.exp_avg_sq[k] * beta2 + g * g * (1.0 - beta2)
            denom = F.sqrt(self.exp_avg_sq[k]) * (1.0 / root_correction) + self.eps
            p = p * (1.0 - lr * decay) - self.exp_avg[k] / denom * step_size
            if self.master is not None:
                self.master[k] = p
            for i, value in zip(index, b.all_gather(F, p)):
                out[i] = value
        return out

    def _gathered(self, F, shards: Sequence, prefix: str) -> Dict[str, np.ndarray]:
        out = {}
        for (_, b, _), shard in zip(self.buckets, shards):
            for name, value in zip(b.names, b.all_gather(F, shard)):
                out[prefix + name] = np.asarray(F.to_numpy(value)).copy()
        return out

    def state(self, F) -> Dict[str, np.ndarray]:
        """Whole moments (every rank of each group calls it) -> ``exp_avg.<name>``,
        ``exp_avg_sq.<name>``, ``step``: the names ``backends.optimizer_layout`` gives."""
        return {"step": np.asarray(self.steps, np.int64), **self._gathered(F, self.exp_avg, "exp_avg."),
                **self._gathered(F, self.exp_avg_sq, "exp_avg_sq.")}

    def load_state(self, F, values: Dict[str, np.ndarray]) -> None:
        """Whole moments (written at any data-parallel size, or by one process) -> this rank's shards."""
        self.steps = int(values["step"])
        self.exp_avg = [F.tensor(b.own_numpy(values, "exp_avg.")) for _, b, _ in self.buckets]
        self.exp_avg_sq = [F.tensor(b.own_numpy(values, "exp_avg_sq.")) for _, b, _ in self.buckets]

    def masters(self, F) -> Dict[str, np.ndarray]:
        """The whole float32 masters of a low-precision model; {} for a float32 one."""
        return {} if self.master is None else self._gathered(F, self.master, "")

    def load_masters(self, F, values: Dict[str, np.ndarray]) -> None:
        if self.master is not None:
            self.master = [F.tensor(b.own_numpy(values)) for _, b, _ in self.buckets]
