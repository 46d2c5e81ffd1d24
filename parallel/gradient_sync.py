"""The gradient synchronisation plan of a multi-process run, written once on the op
vocabulary ``F`` (both train steps call it between backward and the optimizer).

Every rank's loss is the mean over its ``B / W`` sequences, so the global batch's loss is
the mean of the ranks' losses and its gradient is ``(1 / W) sum_r dL_r``:

- a replicated (non-expert) parameter: its gradient is summed over all ``W`` ranks, / W;
- an expert shard: backward through the all-to-alls has already summed the contributions
  of every rank of its EP group; summing over its EDP group (the replicas of the same
  experts) adds the rest, / W.

The global gradient norm counts every parameter once: the replicated part (identical on
every rank after the sum) once, plus the expert shards' squares summed over the EP group
(each expert lives on exactly one rank of it). Not averaged, not counted ``ep`` times.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from core.layout import ParallelRun
from core.params import ParamSpec


class GradientSync:
    """For the trainable parameters ``names`` (in the train step's order) of a model with
    ``specs``, on the ranks of ``run``."""

    def __init__(self, run: ParallelRun, names: Sequence[str], specs: Dict[str, ParamSpec]) -> None:
        self.run = run
        self.names = tuple(names)
        self.sharded = [bool(specs[name].expert_sharded) for name in self.names]

    def _sum(self, F, grads: List, group) -> List:
        """One all-reduce of the concatenated gradients (a bucket), split back."""
        if not grads:
            return []
        flat = F.all_reduce(F.concat([F.reshape(g, (-1,)) for g in grads], 0), group)
        out, start = [], 0
        for g in grads:
            size = 1
            for n in g.shape:
                size *= n
            out.append(F.reshape(flat[start:start + size], g.shape))
            start += size
        return out

    def average(self, F, grads: Sequence) -> List:
        """Gradients in ``names`` order -> the global batch's gradients (see module doc)."""
        lay, groups = self.run.layout, self.run.groups
        replicated = [i for i, s in enumerate(self.sharded) if not s]
        sharded = [i for i, s in enumerate(self.sharded) if s]
        out = list(grads)
        for indices, group, ranks in ((replicated, groups["world"], lay.world_size),
                                      (sharded, groups.get("edp"), lay.edp_size)):
            summed = self._sum(F, [grads[i] for i in indices], group) if ranks > 1 else [grads[i] for i in indices]
            for i, g in zip(indices, summed):
                out[i] = g * (1.0 / lay.world_size)
        return out

    def global_norm(self, F, grads: Sequence):
        """sqrt(sum of squares of every parameter of the model, each counted once), float32."""
        replicated = F.zeros((), F.float32)
        sharded = F.zeros((), F.float32)
        for g, is_sharded in zip(grads, self.sharded):
            square = F.sum(F.cast(g, F.float32) * F.cast(g, F.float32))
            if is_sharded:
                sharded = sharded + square
            else:
                replicated = replicated + square
        if self.run.layout.expert_parallel > 1:
            sharded = F.all_reduce(sharded, self.run.groups["ep"])
        return F.sqrt(replicated + sharded)

    def batch_mean(self, F, value):
        """A scalar's mean over all ranks (the global batch's loss)."""
        return F.all_reduce(F.cast(value, F.float32), self.run.groups["world"]) * (1.0 / self.run.layout.world_size)
