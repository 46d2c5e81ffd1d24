"""The trainer's side of a multi-process run, framework-free: which rows of the global
batch this rank reads, the metrics of the global batch, which ranks write which part of a
checkpoint, and which rank talks to the user. A single process is the same object with
one rank, so the trainer has no second code path.

- Run directory: shared by every rank (``join_run_dir`` checks it at the start and makes
  this launch's folder, ``<run_dir>/.launch/<token>``, for the waits below).
- Data: every rank builds the same data (rank 0 first, so caches are written once; the
  others wait on a file in the launch folder with ``parallel.data_timeout_s``, not in a
  collective limited by ``parallel.timeout_s``) and reads rows ``[r B / W, (r + 1) B / W)``
  of each global batch: the W ranks together see exactly the single-process batch.
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
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from core.errors import ConfigError
from core.layout import ExpertParallel, expert_range
from core.params import ParamSpec, init_params
from launch.process_groups import ParallelRun, init_process_groups
from parallel.sharding import local_values
from training.checkpoint import Checkpoint, load_checkpoint, newest_loadable, save_checkpoint, save_expert_shard

FRAMEWORK_RNG = ("framework", "device")  # generator states only the framework that wrote them can load


SHARED_DIR_WAIT_S = 90.0  # NFS may take up to a minute (attribute caching) to show another node's new file


def wait_for(condition: Callable[[], bool], limit_s: float, longest_poll_s: float = 2.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``limit_s`` passed (False); the polls
    start 50 ms apart and slow down to ``longest_poll_s`` (a shared filesystem's server
    gets few requests from a long wait)."""
    deadline, poll = time.monotonic() + limit_s, 0.05
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        poll = min(2 * poll, longest_poll_s)
    return True


class Distributed:
    """This process's place in the run; ``run`` None for a single process. ``F``: the
    backend's op vocabulary (for the host-side all-reduces)."""

    def __init__(self, run: Optional[ParallelRun], F) -> None:
        self.run, self.F = run, F
        self.launch_dir: Optional[Path] = None

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

    def join_run_dir(self, run_dir: Path, timeout_s: float) -> None:
        """Agree on this launch's folder ``<run_dir>/.launch/<token>`` (rank 0 draws the token)
        and check that every rank sees rank 0's files there: the run directory must be on a
        filesystem every rank shares (checkpoints, expert shards, the data handshake). A rank
        that does not see rank 0's file within ``min(SHARED_DIR_WAIT_S, timeout_s / 2)`` (NFS
        attribute caching) stops the run on every rank with one line naming it."""
        if self.run is None:
            return
        mine = f"{os.urandom(6).hex()} {socket.gethostname()}".encode() if self.is_main else b""
        token, host = self.broadcast_bytes(mine).decode().split(" ", 1)
        self.launch_dir = Path(run_dir) / ".launch" / token
        marker = self.launch_dir / "rank0"
        if self.is_main:
            for stale in self.launch_dir.parent.glob("*"):
                shutil.rmtree(stale, ignore_errors=True)
            self.launch_dir.mkdir(parents=True)
            marker.write_text(f"{host}\n", encoding="utf-8")
        self.barrier()
        seen = self.is_main or wait_for(lambda: marker.is_file(), min(SHARED_DIR_WAIT_S, timeout_s / 2))
        blind = [r for r, ok in enumerate(self.all_flags(seen)) if not ok]
        if blind:
            raise ConfigError(f"rank(s) {', '.join(map(str, blind))} cannot see the files rank 0 (on {host}) writes "
                              f"in the run directory (run_dir/.launch/{token}/rank0 is missing there): run_dir must "
                              f"be on a filesystem every node shares (NFS, Lustre, ...)")

    def main_first(self, build: Callable[[], object], what: str, limit_s: float) -> object:
        """``build()`` on rank 0, then on the others (shared caches are written once), with
        waits on files in the launch folder, outside any collective: the others wait up to
        ``limit_s`` for rank 0's build, then every rank for the others' (``what`` names it
        in the error). A build that fails on rank 0 stops the others with its message."""
        if self.run is None:
            return build()
        done, failed = self.launch_dir / "built.rank0", self.launch_dir / "failed.rank0"
        if self.is_main:
            try:
                result = build()
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}", encoding="utf-8")
                raise
            done.touch()
        else:
            if not wait_for(lambda: done.is_file() or failed.is_file(), limit_s):
                raise ConfigError(f"rank {self.rank}: waited {limit_s:g} s for rank 0 to build {what} "
                                  f"(parallel.data_timeout_s={limit_s:g}); raise it for a larger corpus")
            if failed.is_file():
                raise ConfigError(f"rank {self.rank}: rank 0 could not build {what} "
                                  f"({failed.read_text(encoding='utf-8').strip().splitlines()[0]})")
            result = build()
            (self.launch_dir / f"built.rank{self.rank}").touch()
        ready = lambda: len(list(self.launch_dir.glob("built.rank*"))) == self.world  # noqa: E731
        if not wait_for(ready, limit_s):
            missing = [r for r in range(self.world) if not (self.launch_dir / f"built.rank{r}").is_file()]
            raise ConfigError(f"rank {self.rank}: waited {limit_s:g} s for rank(s) {missing[:8]} to load {what} "
                              f"(parallel.data_timeout_s={limit_s:g})")
        return result

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

    def broadcast_bytes(self, blob: bytes) -> bytes:
        """Rank 0's ``blob`` on every rank."""
        return self.gather_bytes(blob if self.is_main else b"")[0]

    def all_flags(self, flag: bool) -> List[bool]:
        """Every rank's ``flag``, in rank order, on every rank."""
        return [blob == b"1" for blob in self.gather_bytes(b"1" if flag else b"0")]

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
    def held_experts(self, specs: Dict[str, ParamSpec]) -> Optional[Tuple[int, int, int]]:
        """(first, end, total): the experts whose stacks this rank holds, None when it holds
        them all (one process, data parallelism alone, a model without experts)."""
        if self.run is None or self.run.layout.expert_parallel == 1:
            return None
        total = next((spec.shape[0] for spec in specs.values() if spec.expert_sharded), None)
        if total is None:
            return None
        lay = self.run.layout
        return (*expert_range(total, lay.expert_parallel, lay.ep_rank), total)

    def init_local(self, specs: Dict[str, ParamSpec], seed: int) -> Dict[str, np.ndarray]:
        """This rank's initial parameters (the single process's, sliced), each cut as soon as
        it is drawn: no rank holds the whole model."""
        return init_params(specs, seed, select=lambda name, value: self.local({name: value}, specs)[name])

    def local(self, values: Dict[str, np.ndarray], specs: Dict[str, ParamSpec],
              held: Optional[Tuple[int, int]] = None) -> Dict[str, np.ndarray]:
        """Full parameters (or optimizer moments named ``<kind>.<param>``) -> this rank's;
        ``held``: the expert stacks already hold only this rank's experts (a checkpoint
        loaded with ``held_experts``)."""
        if self.run is None or held is not None:
            return values
        lay = self.run.layout
        named = {**specs, **{f"{kind}.{name}": spec for name, spec in specs.items()
                             for kind in ("exp_avg", "exp_avg_sq")}}
        return local_values(values, named, lay.expert_parallel, lay.ep_rank)

    def agreed_checkpoint(self, directory: Path, log: Callable[[str], None],
                          specs: Dict[str, ParamSpec]) -> Tuple[Path, Checkpoint]:
        """The checkpoint every rank resumes from: rank 0 picks the newest loadable one and
        sends its step; every rank loads that step (its own experts only, ``held_experts``)
        and says whether it could. A rank that cannot (an NFS cache that does not show the
        file yet, a damaged shard) stops every rank with one line naming it and why,
        where ranks used to pick their own newest checkpoint, possibly of different steps."""
        experts = self.held_experts(specs)
        if self.run is None:
            return newest_loadable(directory, log, experts)
        path, checkpoint, problem = None, None, ""
        if self.is_main:
            try:
                path, checkpoint = newest_loadable(directory, log, experts)
            except ConfigError as error:
                problem = str(error)
        chosen = self.broadcast_bytes(b"" if problem else str(checkpoint.step).encode() if self.is_main else b"")
        if not chosen:
            raise ConfigError("rank 0 found no checkpoint to resume from" + (f" ({problem})" if problem else ""))
        if not self.is_main:
            path = directory / f"step_{int(chosen):08d}.safetensors"
            try:
                checkpoint = load_checkpoint(path, experts)
            except ConfigError as error:
                problem = str(error).replace(str(path) + ": ", "")
        failed = [(r, blob.decode()) for r, blob in enumerate(self.gather_bytes(problem.encode())) if blob]
        if failed:
            rank, reason = failed[0]
            raise ConfigError(f"rank(s) {', '.join(str(r) for r, _ in failed)} cannot read {path.name}, the checkpoint "
                              f"rank 0 resumes from (rank {rank}: {reason}); every rank needs the run directory's "
                              f"files (a filesystem every node shares)")
        return path, checkpoint

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

