"""One writer per run directory (training/run_lock.py): a held lock refuses a second process
in one line naming the holder; a lock whose holder was killed is taken over and the takeover
logged; a record naming a live process on this host refuses even without the lock (a
filesystem without fcntl locks); within one process the lock is re-entrant; the launch
scripts' check takes and writes nothing, refuses before any launcher starts, and only on
node 0."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from core.errors import ConfigError
from training import run_lock
from training.run_lock import LOCK_NAME, check_run_dir_free, lock_run_dir, takes_lock
from training.tiny_run import tiny_run_config, write_corpus

ROOT = Path(__file__).resolve().parents[2]


def holder(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the lock, says so on stdout and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from training.run_lock import lock_run_dir
        lock_run_dir({str(run_dir)!r}, log=lambda line: None)
        print("locked", flush=True)
        time.sleep(300)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / LOCK_NAME).read_text())


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a process holding no lock (the registry is per process)."""
    monkeypatch.setattr(run_lock, "_held", {})
    for key in ("RANK", "RANK_ID", "MS_ROLE"):
        monkeypatch.delenv(key, raising=False)


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    first = holder(run_dir)
    try:
        assert record(run_dir)["pid"] == first.pid
        with pytest.raises(ConfigError) as refused:
            lock_run_dir(run_dir)
        message = str(refused.value)
        assert "\n" not in message
        assert f"pid {first.pid} on host {socket.gethostname()}" in message and "in use by another job" in message
        with pytest.raises(ConfigError, match=f"pid {first.pid}"):
            check_run_dir_free(run_dir)  # the launch scripts' early check says the same
    finally:
        first.kill()
        first.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_and_logged(tmp_path):
    run_dir = tmp_path / "run"
    dead = holder(run_dir)
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    assert record(run_dir)["pid"] == dead.pid  # the record stays: a stale lock file
    check_run_dir_free(run_dir)  # free: the launch scripts let the job start ...
    assert record(run_dir)["pid"] == dead.pid  # ... and the check wrote nothing
    lines = []
    lock = lock_run_dir(run_dir, log=lines.append)
    assert record(run_dir)["pid"] == os.getpid()
    assert len(lines) == 1 and f"pid {dead.pid}" in lines[0] and "is gone: lock taken over" in lines[0]
    lock.release()
    assert (run_dir / LOCK_NAME).read_text() == ""  # released: no record, nothing to take over


def test_a_live_holder_without_the_lock_is_refused(tmp_path):
    """What a filesystem that ignores fcntl locks looks like: a record naming a process that
    runs on this host, and nobody holding the lock."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.1)
        start = run_lock._process_start(alive.pid)
        (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid,
                                                     "started": time.time(), "process_start": start}))
        with pytest.raises(ConfigError, match="does not seem to support fcntl locks"):
            lock_run_dir(run_dir)
        with pytest.raises(ConfigError, match=f"pid {alive.pid}"):
            check_run_dir_free(run_dir)
        # the same pid with another start time is a recycled pid: the holder is gone
        (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid,
                                                     "process_start": start - 1}))
        lines = []
        lock_run_dir(run_dir, log=lines.append).release()
        assert "is gone: lock taken over" in lines[0]
    finally:
        alive.kill()
        alive.wait()


def test_a_record_from_another_host_is_taken_over_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "started": 0}))
    lines = []
    lock_run_dir(run_dir, log=lines.append).release()
    assert "node-elsewhere" in lines[0] and "between hosts" in lines[0]


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    run_dir = tmp_path / "run"
    first = lock_run_dir(run_dir)
    second = lock_run_dir(run_dir)  # a second Trainer on the same run in this process
    assert second is first
    check_run_dir_free(run_dir)  # ours: no refusal, and the lock is not dropped by it
    first.release()
    probe = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                            f"from training.run_lock import lock_run_dir; lock_run_dir({str(run_dir)!r})"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "in use by another job" in probe.stderr  # still held once
    second.release()
    free = holder(run_dir)  # now free
    free.kill()
    free.wait()


def test_an_unwritable_run_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write there"):
        lock_run_dir(blocker / "run")


def test_only_the_first_process_of_a_job_takes_the_lock(monkeypatch):
    assert takes_lock()  # one process
    monkeypatch.setenv("RANK", "0")
    assert takes_lock()
    monkeypatch.setenv("RANK", "1")
    assert not takes_lock()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("RANK_ID", "0")
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")
    assert takes_lock()
    monkeypatch.setenv("MS_ROLE", "MS_SCHED")  # msrun's scheduler runs the script with RANK_ID=0 too
    assert not takes_lock()


def launch_script(script: str, config: Path, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *options, "--log-dir", str(tmp_path / "logs"),
                           "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def held_run(tmp_path: Path):
    """A fresh EP=2 run config on a run directory that another process holds: (config, holder)."""
    raw = tiny_run_config(tmp_path / "run", write_corpus(tmp_path / "text.txt", sentences=20), "torch",
                          parallel={"expert_parallel": 2})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config, holder(tmp_path / "run")


def test_the_device_scripts_refuse_a_held_run_dir_before_any_launcher(tmp_path):
    """run_cuda.sh and run_ascend.sh go through launch.sh's check (run_cpu.sh: a real job's
    resume, tests/distributed/test_job_ownership.py), for a fresh start too."""
    config, first = held_run(tmp_path)
    try:
        for script in ("run_cuda.sh", "run_ascend.sh"):
            result = launch_script(script, config, tmp_path, "--nproc-per-node", "2", "--master-port", "0")
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, f"{script}: exit {result.returncode}: {lines}"
            assert f"pid {first.pid} on host" in lines[0] and "in use by another job" in lines[0], lines[0]
            assert not (tmp_path / "logs").exists(), f"{script} started a launcher"
    finally:
        first.kill()
        first.wait()


def test_a_later_node_of_a_job_is_not_refused_by_the_jobs_own_lock(tmp_path):
    """Node 1's launch script may start after node 0's rank 0 took the lock (msrun starts its
    ranks before every node has joined): only node 0 checks, so node 1 starts its launcher
    (here a torchrun that finds no node 0 and is ended by --timeout 1: exit 124)."""
    config, first = held_run(tmp_path)
    try:
        result = launch_script("launch.sh", config, tmp_path, "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", "1", "--framework", "torch", "--timeout", "1")
        assert result.returncode == 124 and (tmp_path / "logs").is_dir(), result.stdout + result.stderr
        assert "in use by another job" not in result.stdout + result.stderr
    finally:
        first.kill()
        first.wait()
