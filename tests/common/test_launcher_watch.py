"""A process started by a launcher exits, with one line naming the reason, when its launcher
dies (launch/launcher_watch.py): its parent, or the launch script's process named by
$MOE_LAUNCHER_PID; outside a launcher nothing is watched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANK = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {str(ROOT)!r})
    from launch.launcher_watch import watch_launcher
    print(os.getpid(), watch_launcher(poll_s=0.1), flush=True)
    time.sleep(120)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def start_rank(tmp_path: Path, env: dict, rank_code: str = RANK):
    """A launcher stand-in (a Python parent) starting one 'rank' in a session of its own, as
    torchrun and msrun do; returns (launcher, rank pid, the rank's stderr file)."""
    err = tmp_path / "rank.err"
    launcher_code = textwrap.dedent(f"""
        import subprocess, sys, time
        rank = subprocess.Popen([sys.executable, "-c", {rank_code!r}], stdout=subprocess.PIPE, text=True,
                                stderr=open({str(err)!r}, "w"), start_new_session=True)
        print(rank.stdout.readline().strip(), flush=True)
        time.sleep(120)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
    pid, watching = launcher.stdout.readline().split()
    return launcher, int(pid), watching == "True", err


def gone_after_killing(launcher: subprocess.Popen, rank: int) -> bool:
    """SIGKILL to ``launcher``: whether ``rank`` is gone 5 s later (it is killed if not)."""
    launcher.kill()
    launcher.wait()
    gone = wait_gone(rank, 5)
    if not gone:
        os.kill(rank, signal.SIGKILL)
    return gone


@pytest.mark.parametrize("marker", ["TORCHELASTIC_RUN_ID", "MS_ROLE"])
def test_a_rank_exits_when_its_parent_launcher_is_killed(tmp_path, marker):
    launcher, rank, watching, err = start_rank(tmp_path, {marker: "MS_WORKER" if marker == "MS_ROLE" else "x",
                                                          "RANK": "3"})
    assert watching and alive(rank)
    assert gone_after_killing(launcher, rank), "the rank outlived its launcher"
    lines = err.read_text().strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"error: rank 3: its launcher (pid {launcher.pid}) is gone")


def test_an_msrun_worker_inside_a_call_that_keeps_the_interpreter_lock_dies_with_msrun(tmp_path):
    """MindSpore's init() keeps the interpreter lock while it waits for every node, so the watch
    thread cannot run: killed_with_launcher() has the kernel kill the worker (here the call
    is libc's sleep through ctypes.PyDLL, which keeps the lock too)."""
    rank_code = RANK.replace("time.sleep(120)", "from launch.launcher_watch import killed_with_launcher\n"
                             "import ctypes\nwith killed_with_launcher():\n    ctypes.PyDLL(None).sleep(120)")
    launcher, rank, watching, err = start_rank(tmp_path, {"MS_ROLE": "MS_WORKER", "RANK_ID": "0"}, rank_code)
    assert watching and alive(rank)
    time.sleep(0.3)  # inside the call
    assert gone_after_killing(launcher, rank), "the worker outlived msrun inside the call"


def test_a_rank_exits_when_the_launch_scripts_process_is_killed(tmp_path):
    """The launch script's process ($MOE_LAUNCHER_PID: `timeout` around torchrun) dies, the
    rank's own parent lives on."""
    outer = subprocess.Popen(["sleep", "120"])
    launcher, rank, watching, err = start_rank(tmp_path, {"MOE_LAUNCHER_PID": str(outer.pid), "RANK": "0"})
    try:
        assert watching and alive(rank)
        assert gone_after_killing(outer, rank)
        assert f"its launcher (pid {outer.pid}) is gone" in err.read_text()
    finally:
        launcher.kill()
        launcher.wait()


def test_a_launcher_gone_before_the_watch_starts_ends_the_rank_at_once(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = subprocess.run([sys.executable, "-c", RANK], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MOE_LAUNCHER_PID": str(gone.pid), "RANK": "1"})
    assert result.returncode == 4 and f"error: rank 1: its launcher (pid {gone.pid}) is gone" in result.stderr


def test_nothing_is_watched_outside_a_launcher():
    env = {k: v for k, v in os.environ.items()
           if k not in ("MOE_LAUNCHER_PID", "TORCHELASTIC_RUN_ID", "MS_ROLE")}
    code = RANK.replace("time.sleep(120)", "")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and result.stdout.split()[1] == "False"
