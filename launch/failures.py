"""What ended a rank of a multi-process run, in one line that names the real cause, and the
exit code that goes with it (``scripts/train.py``). Framework-free: errors are told apart by
their type's name and message, so nothing here imports torch or MindSpore.

- a collective that failed or timed out (torch.distributed's ``DistBackendError`` and kin,
  gloo/NCCL/HCCL/MindSpore communication messages, a peer that closed its connection):
  another rank died or stalled, exit ``COLLECTIVE`` (4);
- the device or host ran out of memory (``OutOfMemoryError``, "out of memory",
  ``MemoryError``): exit ``OUT_OF_MEMORY`` (5);
- anything else (a shape error, a bug): its type and first line, exit ``OTHER`` (1); the
  caller prints the traceback to the rank's log first.
"""
from __future__ import annotations

import re
from typing import Tuple

COLLECTIVE, OUT_OF_MEMORY, OTHER = 4, 5, 1

COLLECTIVE_TYPES = {"DistBackendError", "DistNetworkError", "DistStoreError", "DistError"}
COLLECTIVE_MESSAGE = re.compile(
    r"gloo|nccl|hccl|mccl|connection (closed|reset|refused)|closed by peer|broken pipe|timed out|timeout|"
    r"collective|process ?group|heartbeat|all_?reduce|all_?gather|all_?to_?all|communicat|torch\.distributed|"
    r"c10d", re.IGNORECASE)
MEMORY_MESSAGE = re.compile(r"out of memory|\bOOM\b|memory (allocation|alloc) failed|can't allocate memory",
                            re.IGNORECASE)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _names(error: BaseException) -> set:
    return {cls.__name__ for cls in type(error).__mro__}


def describe_failure(error: BaseException, rank: int, timeout_s: float) -> Tuple[int, str]:
    """(exit code, one line for stderr) for ``error`` raised on ``rank``."""
    names, line = _names(error), first_line(error)
    if "OutOfMemoryError" in names or isinstance(error, MemoryError) or MEMORY_MESSAGE.search(line):
        return OUT_OF_MEMORY, (f"error: rank {rank}: out of memory ({line}); lower train.batch_size or raise "
                               f"train.grad_accum, or use more ranks")
    if names & COLLECTIVE_TYPES or COLLECTIVE_MESSAGE.search(str(error)):
        return COLLECTIVE, (f"error: rank {rank}: a collective failed or timed out (parallel.timeout_s="
                            f"{timeout_s:g}): another rank died or stalled; the launcher's log names it ({line})")
    return OTHER, f"error: rank {rank}: {type(error).__name__}: {line} (traceback above and in the rank's log)"
