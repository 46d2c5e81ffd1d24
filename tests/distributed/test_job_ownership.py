"""A job owns its ranks and its run directory (issue 25), on torchrun and msrun through
scripts/run_cpu.sh (and run_cuda.sh / run_ascend.sh, on the CPU config), 2 ranks at EP=2:

- SIGKILL to the launcher's process group (``kill -9``, an OOM kill, a node agent): both
  launchers start each rank in a session of its own, out of the kill's reach; every rank
  (and msrun's scheduler and log tail) is gone well within 10 s, each rank's launcher log
  ending on one line that names the reason (launch/launcher_watch.py);
- ``--resume`` of a running job (through run_cpu.sh, the framework's device script, and as one
  process) and a fresh start on its directory are refused in one line naming the job's rank
  0, and write nothing in its run directory (the job is frozen with SIGSTOP meanwhile, so that
  every file can be compared); the job then trains on;
- the lock file a killed job leaves behind does not block ``--resume``: it is taken over, and
  the takeover is logged with the dead holder's pid (training/run_lock.py)."""
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

FRAMEWORKS = ["torch", "mindspore"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "text.txt")


def launch_cmd(script: str, log_dir: Path) -> List[str]:
    """2 processes on this machine through ``script``: run_cpu.sh, or the device scripts
    (which name the framework themselves) on the CPU config."""
    size = ["-n", "2"] if script == "run_cpu.sh" else ["--nproc-per-node", "2", "--master-port", "0"]
    return ["bash", str(ROOT / "scripts" / script), *size, "--log-dir", str(log_dir)]


def start_job(tmp_path: Path, corpus: Path, framework: str, script: str = "run_cpu.sh") -> subprocess.Popen:
    """A long EP=2 run on 2 processes (checkpoint every 2 steps), in a session of its own so
    that its process group can be killed as a cluster's agent would."""
    raw = tiny_run_config(tmp_path / "run", corpus, framework, parallel={"expert_parallel": 2},
                          train={"steps": 100000, "batch_size": 8, "checkpoint_every": 2, "keep_checkpoints": 2})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return subprocess.Popen(launch_cmd(script, tmp_path / "logs_first") + ["--config", str(config), "--no-progress"],
                            cwd=ROOT, stdout=open(tmp_path / "first.out", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_checkpoint(job: subprocess.Popen, run_dir: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if latest_checkpoint(run_dir / "checkpoints") is not None:
            return
        if job.poll() is not None:
            pytest.fail(f"the job ended ({job.returncode}) before its first checkpoint")
        time.sleep(0.3)
    pytest.fail("no checkpoint within the time limit")


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


def kill_job(job: subprocess.Popen, tmp_path: Path) -> None:
    """SIGKILL to the launcher's process group; leftovers (a failed test) killed one by one."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait()
    for pid in wait_all_gone(tmp_path, 10):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def snapshot(run_dir: Path) -> Dict[str, tuple]:
    return {str(path.relative_to(run_dir)): (path.stat().st_size, path.stat().st_mtime_ns,
                                             hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(run_dir.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("framework, script", [("torch", "run_cpu.sh"), ("mindspore", "run_cpu.sh"),
                                               ("torch", "run_cuda.sh"), ("mindspore", "run_ascend.sh")])
def test_killing_the_launcher_ends_every_rank(tmp_path, corpus, framework, script):
    job = start_job(tmp_path, corpus, framework, script)
    try:
        wait_for_checkpoint(job, tmp_path / "run")
        assert len(ranks(tmp_path)) == 2, job_processes(tmp_path)
        os.killpg(job.pid, signal.SIGKILL)
        killed = time.monotonic()
        job.wait()
        left = wait_all_gone(tmp_path, 10)
        assert not left, f"alive {time.monotonic() - killed:.0f}s after the launcher was killed: {left}"
    finally:
        kill_job(job, tmp_path)
    logs = [path for path in (tmp_path / "logs_first").rglob("*.log")
            if "its launcher (pid" in path.read_text(errors="replace")]
    assert len(logs) == 2, f"expected one line in each rank's launcher log: {logs}"
    for path in logs:  # the rank's last line, once
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        assert re.match(r"error: rank [01]: its launcher \(pid \d+\) is gone", lines[-1]), lines[-3:]
        assert sum("its launcher (pid" in line for line in lines) == 1, lines[-3:]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_resume_while_the_job_runs_is_refused(tmp_path, corpus, framework):
    job = start_job(tmp_path, corpus, framework)
    run_dir = tmp_path / "run"
    frozen: List[int] = []
    try:
        wait_for_checkpoint(job, run_dir)
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert holder["pid"] in ranks(tmp_path) and holder["host"] == socket.gethostname()
        os.killpg(job.pid, signal.SIGSTOP)  # launcher (and msrun's scheduler), then the ranks
        frozen = ranks(tmp_path)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.5)  # a write in flight lands before the snapshot
        before = snapshot(run_dir)
        device_script = {"torch": "run_cuda.sh", "mindspore": "run_ascend.sh"}[framework]
        attempts = {
            "run_cpu.sh": launch_cmd("run_cpu.sh", tmp_path / "logs_second") + ["--resume", str(run_dir)],
            device_script: launch_cmd(device_script, tmp_path / "logs_second") + ["--resume", str(run_dir)],
            "fresh": launch_cmd("run_cpu.sh", tmp_path / "logs_second") + ["--config", str(tmp_path / "c.yaml")],
            "one process": [sys.executable, str(ROOT / "scripts" / "train.py"), "--resume", str(run_dir),
                            "--set", "parallel.expert_parallel=1", "--no-progress"],
        }
        for how, cmd in attempts.items():
            result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, f"{how}: exit {result.returncode}\n" + "\n".join(lines)
            assert f"pid {holder['pid']} on host {holder['host']}" in lines[0], lines[0]
            assert "in use by another job" in lines[0] and LOCK_NAME in lines[0], lines[0]
        assert snapshot(run_dir) == before, "a refused job wrote into the run directory"
        assert not (tmp_path / "logs_second").exists()  # refused before any launcher started
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        try:
            os.killpg(job.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    try:
        step = latest_checkpoint(run_dir / "checkpoints")
        deadline = time.monotonic() + 120
        while latest_checkpoint(run_dir / "checkpoints") == step and time.monotonic() < deadline:
            assert job.poll() is None, f"the first job ended ({job.returncode})"
            time.sleep(0.3)
        assert latest_checkpoint(run_dir / "checkpoints") != step, "the first job did not train on"
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder["pid"]
    finally:
        kill_job(job, tmp_path)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_stale_lock_does_not_block_a_resume(tmp_path, corpus, framework):
    job = start_job(tmp_path, corpus, framework)
    run_dir = tmp_path / "run"
    try:
        wait_for_checkpoint(job, run_dir)
    finally:
        kill_job(job, tmp_path)
    dead = json.loads((run_dir / LOCK_NAME).read_text())["pid"]
    assert dead not in ranks(tmp_path)
    step = int(latest_checkpoint(run_dir / "checkpoints").name.split("_")[1].split(".")[0])
    result = subprocess.run(launch_cmd("run_cpu.sh", tmp_path / "logs_second") +
                            ["--resume", str(run_dir), "--set", f"train.steps={step + 2}", "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"pid {dead} on host" in output and "is gone: lock taken over" in output, output[-3000:]
    assert f"(step {step})" in output and f"done: {step + 2} steps" in output, output[-3000:]
