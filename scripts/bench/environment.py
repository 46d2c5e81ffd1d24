"""Process-start settings of glibc malloc and OpenMP for the benchmark workers (the launch
scripts export the same through scripts/perf_env.sh). They must be in the environment before
a worker starts: glibc and the OpenMP runtime read them once, at start-up."""
from __future__ import annotations

import os
from typing import Dict

MALLOC_MODES = ("heap", "default")
# heap: never mmap (MALLOC_MMAP_MAX_=0) and never give the heap's top back (trim threshold
# 1 TiB). glibc serves blocks over its mmap threshold (at most 32 MiB) with a fresh mmap and
# unmaps them on free, so every step page-faults its large tensors anew (measured: 131k-162k
# minor faults, about 0.6 GB, per step of the d=512, 4096-token layer; 0 with these settings).
HEAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def worker_environment(malloc: str, omp_wait_policy: str) -> Dict[str, str]:
    """Put the settings into ``os.environ`` (so spawned workers inherit them) and return them.
    ``malloc``: ``heap`` or ``default`` (glibc's own: inherited MALLOC_* settings removed);
    ``omp_wait_policy``: PASSIVE, ACTIVE, or ``inherit`` (left as it is)."""
    if malloc not in MALLOC_MODES:
        raise ValueError(f"malloc={malloc!r}: choose from {', '.join(MALLOC_MODES)}")
    for key in HEAP:
        os.environ.pop(key, None)
    if malloc == "heap":
        os.environ.update(HEAP)
    if omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = omp_wait_policy
    keys = list(HEAP) + ["OMP_WAIT_POLICY", "OMP_NUM_THREADS"]
    return {key: os.environ[key] for key in keys if key in os.environ}
