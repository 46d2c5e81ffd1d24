"""MindSpore's CPU kernel threads per process follow ``$OMP_NUM_THREADS`` (what
scripts/perf_env.sh gives each of a node's processes), else the process's cores: MindSpore's
default of 25 threads per process oversubscribed the two cores of a two-process run. Torch
has no such setting here: skipped there."""
import os

import pytest


@pytest.fixture
def cpu_threads(runner):
    if runner.name != "mindspore":
        pytest.skip("MindSpore only")
    from backends.mindspore_shell import cpu_threads
    return cpu_threads


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("", None), ("0", None), ("two", None)])
def test_threads_follow_omp_num_threads_else_the_cores(cpu_threads, monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert cpu_threads() == (expected or len(os.sched_getaffinity(0)))
