"""The trainer's side of a multi-process run, framework-free: which rows of the global
batch this rank reads, the metrics of the global batch, which ranks write which part of a
checkpoint, and which rank talks to the user. A single process is the same object with
one rank, so the trainer has no second code path.

- Data: every rank builds the same data (rank 0 first, so caches are written once) and
  reads rows ``[r B / W, (r + 1) B / W)`` of each global batch: the W ranks together see
  exactly the single-process batch.
- Metrics and validation loss: means over the ranks (one all-reduce per step), so routers'
  host-side state (``Router.after_step``) is the same on every rank.
- Checkpoints: the first replica of each expert shard (ranks 0..ep-1) writes its expert
  stacks, then rank 0 writes the rest and commits (``training.checkpoint``), with every
  rank's random generator state (``gather_rng``; each rank restores its own,
  ``own_rng``). A checkpoint loads as the full model; each rank keeps its slice
  (``parallel.sharding``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from core.layout import ExpertParallel, expert_range
from core.params import ParamSpec
from launch.process_groups import ParallelRun, init_process_groups
from parallel.sharding import local_values
from training.checkpoint import Checkpoint, save_checkpoint, save_expert_shard

FRAMEWORK_RNG = ("framework", "device")  # generator states only the framework that wrote them can load


class Distributed:
    """This process's place in the run; ``run`` None for a single process. ``F``: the
    backend's op vocabulary (for the host-side all-reduces)."""

    def __init__(self, run: Optional[ParallelRun], F) -> None:
        self.run, self.F = run, F

    @classmethod
    def start(cls, backend: str, device: str, parallel, F) -> "Distributed":
        """Join the launcher's job (``parallel``: the config's ParallelConfig)."""
        return cls(init_process_groups(backend, device, parallel.expert_parallel, parallel.timeout_s,
                                       parallel.world_size, parallel.all_to_all), F)

    @property
    def rank(self) -> int:
        return 0 if self.run is None else self.run.layout.rank

    @property
    def world(self) -> int:
        return 1 if self.run is None else self.run.layout.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def expert_parallel(self) -> Optional[ExpertParallel]:
        return None if self.run is None else self.run.expert_parallel()

    def describe(self) -> str:
        if self.run is None:
            return ""
        lay = self.run.layout
        return (f"; {lay.world_size} ranks on {lay.num_nodes} node(s), expert parallel {lay.expert_parallel} "
                f"({'hierarchical' if 'rail' in self.run.groups else 'flat'} all-to-all), data parallel {lay.world_size}")

    # data
    def rows(self, batch_size: int) -> Tuple[int, int]:
        return (0, batch_size) if self.run is None else self.run.layout.batch_rows(batch_size)

    def main_first(self, build: Callable[[], object]) -> object:
        """``build()`` on rank 0, then on the others (shared caches are written once)."""
        if self.is_main:
            result = build()
            self.barrier()
            return result
        self.barrier()
        return build()

    # reductions
    def barrier(self) -> None:
        if self.run is not None:
            self.F.to_numpy(self.F.all_reduce(self.F.zeros((1,), self.F.float32), self.run.groups["world"]))

    def mean(self, values: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Each value's mean over the ranks (one all-reduce of all of them), float64 numpy."""
        if self.run is None or not values:
            return values
        names = sorted(values)
        arrays = [np.asarray(values[n], np.float64) for n in names]
        flat = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float32)
        total = self.F.to_numpy(self.F.all_reduce(self.F.tensor(flat), self.run.groups["world"])) / self.world
        out, start = {}, 0
        for name, array in zip(names, arrays):
            out[name] = total[start:start + array.size].reshape(array.shape).astype(np.float64)
            start += array.size
        return out

    def gather_bytes(self, blob: bytes) -> List[bytes]:
        """Every rank's ``blob``, in rank order, on every rank (two all-gathers: the lengths,
        then the bytes as float32 values 0..255, exact)."""
        if self.run is None:
            return [blob]
        F, group = self.F, self.run.groups["world"]
        lengths = F.to_numpy(F.all_gather(F.tensor(np.asarray([[len(blob)]], np.float32)), group))
        lengths = lengths.reshape(-1).astype(np.int64)
        row = np.zeros((1, max(1, int(lengths.max()))), np.float32)
        row[0, :len(blob)] = np.frombuffer(blob, np.uint8)
        table = F.to_numpy(F.all_gather(F.tensor(row), group))
        return [table[r, :lengths[r]].astype(np.uint8).tobytes() for r in range(self.world)]

    def gather_rng(self, state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Every rank's generator state (``Runtime.rng_state``) as ``rank<r>/<name>`` (what
        rank 0 writes into a checkpoint)."""
        buffer = io.BytesIO()
        np.savez(buffer, **state)
        out = {}
        for r, blob in enumerate(self.gather_bytes(buffer.getvalue())):
            with np.load(io.BytesIO(blob), allow_pickle=False) as saved:
                out.update({f"rank{r}/{name}": saved[name] for name in saved.files})
        return out

    def own_rng(self, saved: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
        """This rank's generator state in a checkpoint's ``rng`` (``gather_rng``); a checkpoint
        written before every rank's state was saved holds rank 0's only. None when it has
        none for this rank (saved by fewer ranks)."""
        prefix = f"rank{self.rank}/"
        mine = {name[len(prefix):]: value for name, value in saved.items() if name.startswith(prefix)}
        if mine:
            return mine
        legacy = {name: value for name, value in saved.items() if "/" not in name}
        return legacy if legacy and self.is_main else None

    # parameters and checkpoints
    def local(self, values: Dict[str, np.ndarray], specs: Dict[str, ParamSpec]) -> Dict[str, np.ndarray]:
        """Full parameters (or optimizer moments named ``<kind>.<param>``) -> this rank's."""
        if self.run is None:
            return values
        lay = self.run.layout
        named = {**specs, **{f"{kind}.{name}": spec for name, spec in specs.items()
                             for kind in ("exp_avg", "exp_avg_sq")}}
        return local_values(values, named, lay.expert_parallel, lay.ep_rank)

    def save(self, directory: Path, checkpoint: Checkpoint, keep: int, specs: Dict[str, ParamSpec]) -> Optional[Path]:
        """Write this rank's part of ``checkpoint`` (its local values); the path on rank 0."""
        ep = 1 if self.run is None else self.run.layout.expert_parallel
        if ep == 1:
            path = save_checkpoint(directory, checkpoint, keep) if self.is_main else None
            self.barrier()
            return path
        sharded = {name for name, spec in specs.items() if spec.expert_sharded}
        sharded |= {f"{kind}.{name}" for name in sharded for kind in ("exp_avg", "exp_avg_sq")}
        lay = self.run.layout
        if lay.rank < ep:  # the first replica of each expert shard
            shard = Checkpoint(step=checkpoint.step,
                               model={n: v for n, v in checkpoint.model.items() if n in sharded},
                               optimizer={n: v for n, v in checkpoint.optimizer.items() if n in sharded},
                               rng={}, backend=checkpoint.backend, dtype=checkpoint.dtype)
            total = next(specs[name].shape[0] for name in sorted(sharded) if name in specs)
            save_expert_shard(directory, shard, lay.ep_rank, ep, (*expert_range(total, ep, lay.ep_rank), total))
        self.barrier()
        path = None
        if self.is_main:
            rest = Checkpoint(step=checkpoint.step,
                              model={n: v for n, v in checkpoint.model.items() if n not in sharded},
                              optimizer={n: v for n, v in checkpoint.optimizer.items() if n not in sharded},
                              rng=checkpoint.rng, state=checkpoint.state, backend=checkpoint.backend,
                              dtype=checkpoint.dtype)
            path = save_checkpoint(directory, rest, keep, expert_shards=ep)
        self.barrier()
        return path


def rank_log(run_dir: Path, rank: int, log: Callable[[str], None]) -> Callable[[str], None]:
    """A log for one rank of a multi-process run: every line goes to
    ``<run_dir>/logs/rank<r>.log``, and to ``log`` (the terminal) on rank 0 only."""
    path = Path(run_dir) / "logs" / f"rank{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(line: str) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if rank == 0:
            log(line)
    return write

