"""Process groups on each framework's own runtime, from the launcher's environment.

- torch: ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); ``torch.distributed`` with gloo
  on CPU, NCCL on CUDA, HCCL on Ascend (torch_npu); every group gets the config's timeout.
- MindSpore: ``msrun`` (sets ``MS_ROLE``, ``MS_WORKER_NUM``, ``RANK_ID``);
  ``mindspore.communication.init()`` picks HCCL on Ascend, NCCL on GPU, mccl on CPU; each
  rank creates only the groups it belongs to; the timeout goes through the environment
  (``mindspore_timeouts``: HCCL's execution and connect timeouts, the CPU collectives'; none
  exists for NCCL under MindSpore).

The layout is checked (``core.layout``) before any collective is called; a bad one is
one ``ConfigError`` line.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Dict, Optional

from core.errors import ConfigError
from core.layout import ParallelLayout, ParallelRun
from launch.launcher_watch import killed_with_launcher, watch_launcher


def launched_world(backend: str) -> Optional[int]:
    """The world size a launcher set in the environment, or None outside a launcher."""
    if backend == "torch":
        value = os.environ.get("WORLD_SIZE")
    else:  # msrun runs the script in its scheduler process too (MS_ROLE=MS_SCHED): init() serves there
        value = os.environ.get("MS_WORKER_NUM") if os.environ.get("MS_ROLE") else None
    return None if value is None else int(value)


def check_world(backend: str, expert_parallel: int, world_size: int, launched: Optional[int] = None) -> int:
    """The launcher's world size (``launched``, else read from the environment; 1 outside a
    launcher) after checking it against the config (``parallel.world_size`` 0 accepts any)."""
    launched = launched or launched_world(backend) or 1
    if launched == 1 and expert_parallel > 1:
        raise ConfigError(f"parallel.expert_parallel={expert_parallel} needs that many processes; "
                          f"start the run with scripts/run_cpu.sh, run_cuda.sh or run_ascend.sh")
    if world_size and world_size != launched:
        raise ConfigError(f"parallel.world_size={world_size} but the launcher started {launched} process(es)")
    if launched % expert_parallel:
        raise ConfigError(f"parallel.expert_parallel={expert_parallel} must divide the launcher's world size "
                          f"{launched}")
    return launched


def init_process_groups(backend: str, device: str, expert_parallel: int, timeout_s: float,
                        world_size: int = 0, all_to_all: str = "flat") -> Optional[ParallelRun]:
    """Join the launcher's job and make the groups; None for a single process with
    ``expert_parallel`` 1. ``device`` is the resolved torch device or MindSpore target;
    ``all_to_all``: ``flat`` or ``hierarchical`` (adds the node and rail groups)."""
    launched = check_world(backend, expert_parallel, world_size)
    if launched == 1:
        return None
    watch_launcher()  # a rank whose launcher dies exits (scripts/train.py starts it earlier)
    if backend == "torch":
        return _torch_groups(device, expert_parallel, timeout_s, all_to_all == "hierarchical")
    return _mindspore_groups(expert_parallel, all_to_all == "hierarchical", timeout_s)


def close_process_groups(run: Optional[ParallelRun]) -> None:
    """End this rank's torch process groups once every rank has finished (a barrier first):
    a rank that tore its gloo groups down while rank 0 was still writing the last checkpoint
    aborted ("terminate called without an active exception", SIGABRT), about one run in three
    with three jobs on two cores. MindSpore's groups end with the process."""
    if run is not None and run.backend == "torch":
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _group_sets(layout: ParallelLayout, hierarchical: bool):
    """(kind, every group of that kind) for the groups this run needs."""
    kinds = [("ep", layout.ep_groups()), ("edp", layout.edp_groups())]
    if layout.expert_parallel > 1:  # every layout: the locality loss reduces over them (never over the world)
        kinds.append(("node", layout.ep_node_groups()))
    if hierarchical:
        layout.ep_ranks_per_node()  # node-aligned, or one line saying why not
        kinds.append(("rail", layout.ep_rail_groups()))
    return kinds


def _torch_groups(device: str, expert_parallel: int, timeout_s: float, hierarchical: bool) -> ParallelRun:
    import torch.distributed as dist
    layout = ParallelLayout(int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), expert_parallel,
                            int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
    backend = {"cuda": "nccl", "npu": "hccl"}.get(device.split(":")[0], "gloo")
    if backend != "gloo":  # NCCL/HCCL bind one device per process before the group starts
        import torch
        getattr(torch, device.split(":")[0]).set_device(device)
    timeout = timedelta(seconds=timeout_s)
    try:
        dist.init_process_group(backend, timeout=timeout)
    except Exception as error:
        raise ConfigError(f"rank {layout.rank}: torch.distributed could not start ({_first_line(error)})") from None
    groups = {"world": dist.group.WORLD}
    made = {tuple(range(layout.world_size)): dist.group.WORLD}  # one group per set of ranks
    for kind, all_groups in _group_sets(layout, hierarchical):
        for ranks in all_groups:  # every rank creates every group, in the same order
            if tuple(ranks) not in made:  # a node group equal to its EP group is that group
                made[tuple(ranks)] = dist.new_group(ranks, timeout=timeout)
            if layout.rank in ranks:
                groups[kind] = made[tuple(ranks)]
    return ParallelRun("torch", layout, groups)


def mindspore_timeouts(timeout_s: float) -> Dict[str, str]:
    """The environment that gives MindSpore's collectives ``parallel.timeout_s``, set before
    ``init()`` reads it (values already in the environment win):

    - Ascend (HCCL): ``HCCL_EXEC_TIMEOUT`` (a collective's execution) and
      ``HCCL_CONNECT_TIMEOUT`` (building the links at start-up; HCCL accepts 120-7200 s);
    - CPU (MindSpore's own collectives): ``MS_CPU_COMM_OP_TIMEOUT`` (measured here: an
      all-reduce whose peer never comes fails after it with "Launch kernel failed").
    MindSpore on GPU (NCCL) has no collective timeout that a process can set: a stalled peer
    there is ended by the launcher's ``--timeout``."""
    seconds = max(1, int(round(timeout_s)))
    return {"HCCL_EXEC_TIMEOUT": str(seconds), "HCCL_CONNECT_TIMEOUT": str(min(max(seconds, 120), 7200)),
            "MS_CPU_COMM_OP_TIMEOUT": str(seconds)}


def _mindspore_groups(expert_parallel: int, hierarchical: bool, timeout_s: float) -> ParallelRun:
    from mindspore.communication import GlobalComm, create_group, get_group_size, get_local_rank_size, get_rank, init
    for name, value in mindspore_timeouts(timeout_s).items():
        os.environ.setdefault(name, value)
    try:
        with killed_with_launcher():  # init() waits for every node and keeps the interpreter lock
            init()
    except Exception as error:
        if os.environ.get("MS_ROLE") == "MS_SCHED":  # msrun's scheduler serves the cluster inside init()
            raise ConfigError(f"msrun's scheduler: a worker was lost or stalled ({_first_line(error)})") from None
        raise ConfigError(f"MindSpore communication could not start ({_first_line(error)})") from None
    # MindSpore counts a node's ranks by host name; the launch script says what it started per node
    local = int(os.environ.get("MOE_LOCAL_WORLD_SIZE", 0)) or get_local_rank_size()
    layout = ParallelLayout(get_group_size(), get_rank(), expert_parallel, local)
    groups = {"world": GlobalComm.WORLD_COMM_GROUP}
    made = {tuple(range(layout.world_size)): GlobalComm.WORLD_COMM_GROUP}  # one group per set of ranks
    for kind, all_groups in _group_sets(layout, hierarchical):
        ranks = next(group for group in all_groups if layout.rank in group)
        if tuple(ranks) not in made:
            made[tuple(ranks)] = f"{kind}_{'_'.join(map(str, ranks))}"
            if len(ranks) > 1:
                create_group(made[tuple(ranks)], ranks)  # members only
        groups[kind] = made[tuple(ranks)]
    return ParallelRun("mindspore", layout, groups)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
