"""A job owns its ranks and its run directory (issue 25): one EP=2 job on 2 processes through
scripts/run_cpu.sh per launcher (torchrun, msrun), then one resume of it:

- while it runs, ``--resume`` of it (through run_cpu.sh, and as one process past the launch
  script's check) is refused in one line naming its rank 0, and writes nothing in its run
  directory (the job is frozen with SIGSTOP meanwhile, so that every file can be compared);
  the job then trains on;
- SIGKILL to the launcher's process group (``kill -9``, an OOM kill, a node agent): both
  launchers start each rank in a session of its own, out of the kill's reach; every rank
  (and msrun's scheduler and log tail) is gone within 10 s, each rank's launcher log ending
  on one line that names the reason (launch/launcher_watch.py);
- the lock file the killed job leaves behind does not block ``--resume`` (one process, at the
  step the job reached: past the lock and the checkpoint's load, with nothing to train): it is
  taken over, the takeover is logged with the dead holder's pid (training/run_lock.py), and
  the resume, which ends, empties it.

The device scripts (run_cuda.sh, run_ascend.sh) and a fresh start are refused by the same
check, without a job: tests/common/test_run_lock.py."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.distributed.launch import ROOT
from training.checkpoint import latest_checkpoint
from training.run_lock import LOCK_NAME
from training.tiny_run import tiny_run_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "text.txt")


def run_cpu(log_dir: Path) -> List[str]:
    return ["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", "2", "--log-dir", str(log_dir)]


def start_job(tmp_path: Path, corpus: Path, framework: str) -> subprocess.Popen:
    """A long EP=2 run on 2 processes (checkpoint every 2 steps), in a session of its own so
    that its process group can be killed as a cluster's agent would."""
    raw = tiny_run_config(tmp_path / "run", corpus, framework, parallel={"expert_parallel": 2},
                          train={"steps": 100000, "batch_size": 8, "checkpoint_every": 2, "keep_checkpoints": 2})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return subprocess.Popen(run_cpu(tmp_path / "logs_first") + ["--config", str(config), "--no-progress"],
                            cwd=ROOT, stdout=open(tmp_path / "first.out", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_checkpoint_after(job: subprocess.Popen, run_dir: Path, previous=None, timeout: float = 240) -> Path:
    """The job's newest checkpoint once it is not ``previous``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = latest_checkpoint(run_dir / "checkpoints")
        if latest is not None and latest != previous:
            return latest
        if job.poll() is not None:
            pytest.fail(f"the job ended ({job.returncode}) before a checkpoint after {previous}")
        time.sleep(0.2)
    pytest.fail(f"no checkpoint after {previous} within {timeout} s")


def job_processes(tmp_path: Path) -> Dict[int, str]:
    """Every live process whose command line names this test's directory (launcher, ranks,
    msrun's scheduler and its `tail -f` of a worker log): pid -> command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(tmp_path) in cmdline and state not in ("Z", "X"):
            found[int(proc.name)] = cmdline
    return found


def ranks(tmp_path: Path) -> List[int]:
    """The training ranks among them (not the launcher, nor msrun's scheduler)."""
    found = []
    for pid, cmd in job_processes(tmp_path).items():
        try:
            scheduler = b"MS_ROLE=MS_SCHED" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "train.py" in cmd and "torchrun" not in cmd and "msrun" not in cmd and not scheduler:
            found.append(pid)
    return found


def wait_all_gone(tmp_path: Path, seconds: float) -> Dict[int, str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = job_processes(tmp_path)
        if not left:
            return {}
        time.sleep(0.2)
    return job_processes(tmp_path)


def kill_leftovers(job: subprocess.Popen, tmp_path: Path) -> None:
    """After a failed test: the launcher's group, then every process of the job one by one."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait()
    for pid in job_processes(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def snapshot(run_dir: Path) -> Dict[str, tuple]:
    return {str(path.relative_to(run_dir)): (path.stat().st_size, path.stat().st_mtime_ns,
                                             hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(run_dir.rglob("*")) if path.is_file()}


def assert_resumes_refused(tmp_path: Path, job: subprocess.Popen, holder: dict) -> None:
    """With every process of the job frozen: a resume through run_cpu.sh and one as a single
    process (the trainer's own lock, past the launch script) each exit 2 with one line naming
    the holder, write nothing in the run directory and start no launcher."""
    run_dir = tmp_path / "run"
    os.killpg(job.pid, signal.SIGSTOP)  # launcher (and msrun's scheduler), then the ranks
    frozen = ranks(tmp_path)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)  # a write in flight lands before the snapshot
        before = snapshot(run_dir)
        attempts = {"run_cpu.sh": run_cpu(tmp_path / "logs_second") + ["--resume", str(run_dir)],
                    "one process": [sys.executable, str(ROOT / "scripts" / "train.py"), "--resume", str(run_dir),
                                    "--set", "parallel.expert_parallel=1", "--no-progress"]}
        for how, cmd in attempts.items():
            result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, f"{how}: exit {result.returncode}\n" + "\n".join(lines)
            assert f"pid {holder['pid']} on host {holder['host']}" in lines[0], lines[0]
            assert "in use by another job" in lines[0] and LOCK_NAME in lines[0], lines[0]
        assert snapshot(run_dir) == before, "a refused job wrote into the run directory"
        assert not (tmp_path / "logs_second").exists(), "a launcher started"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        os.killpg(job.pid, signal.SIGCONT)  # (a failed test kills them all after)


def assert_rank_logs_name_the_launcher(log_dir: Path) -> None:
    """Each rank's launcher log ends on the watch's line, once."""
    logs = [path for path in log_dir.rglob("*.log") if "its launcher (pid" in path.read_text(errors="replace")]
    assert len(logs) == 2, f"expected one line in each rank's launcher log: {logs}"
    for path in logs:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        assert re.match(r"error: rank [01]: its launcher \(pid \d+\) is gone", lines[-1]), lines[-3:]
        assert sum("its launcher (pid" in line for line in lines) == 1, lines[-3:]


@pytest.mark.parametrize("framework", ["torch", "mindspore"])
def test_a_job_owns_its_ranks_and_its_run_directory(tmp_path, corpus, framework):
    job = start_job(tmp_path, corpus, framework)
    run_dir = tmp_path / "run"
    try:
        first = wait_for_checkpoint_after(job, run_dir)
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert len(ranks(tmp_path)) == 2, job_processes(tmp_path)
        assert holder["pid"] in ranks(tmp_path) and holder["host"] == socket.gethostname()

        assert_resumes_refused(tmp_path, job, holder)
        wait_for_checkpoint_after(job, run_dir, first, timeout=120)  # the job trains on

        os.killpg(job.pid, signal.SIGKILL)
        killed = time.monotonic()
        job.wait()
        left = wait_all_gone(tmp_path, 10)
        assert not left, f"alive {time.monotonic() - killed:.0f}s after the launcher was killed: {left}"
    finally:
        kill_leftovers(job, tmp_path)
    assert_rank_logs_name_the_launcher(tmp_path / "logs_first")

    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder["pid"]  # the stale record stays
    step = int(latest_checkpoint(run_dir / "checkpoints").name.split("_")[1].split(".")[0])
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--resume", str(run_dir), "--set",
                             "parallel.expert_parallel=1", "--set", f"train.steps={step}", "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=400,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"pid {holder['pid']} on host" in output and "is gone: lock taken over" in output, output[-3000:]
    assert f"(step {step})" in output and f"done: {step} steps" in output, output[-3000:]
    assert (run_dir / LOCK_NAME).read_text() == "", "a job that ended left its record"
