"""What a process started by torchrun or msrun knows of its launcher: its rank before any
group exists, and a watch that ends it when the launcher dies.

Both launchers start each rank in a session of its own, so killing the launcher's process
group (``kill -9``, an OOM kill, a node agent) does not reach the ranks: without the watch
they are re-parented to init and go on training, writing checkpoints nobody asked for.
``watch_launcher()`` (called by ``scripts/train.py`` at start-up and by
``launch.process_groups.init_process_groups`` for any other script) starts a daemon thread
that polls, every ``POLL_S`` seconds, the parent process and the launch script's process
(``$MOE_LAUNCHER_PID``, exported by ``scripts/launch.sh``: torchrun / msrun, or the
``timeout`` wrapper around them). When either is gone, the process writes one line on
stderr (the launcher's per-rank log) and exits with ``EXIT_CODE`` at once: a checkpoint being
written is left as a temporary file that is never read, and the run directory's lock
(``training.run_lock``) goes with the process.

A thread rather than ``PR_SET_PDEATHSIG`` for the ranks: the signal comes when the *thread*
that forked the rank ends (not the launcher), and only SIGKILL would end a rank blocked in a
collective, without the line; a thread that polls needs neither and costs one ``getppid`` per
poll. msrun's scheduler is the exception: it spends its life inside MindSpore's ``init()``,
which keeps the interpreter lock, so no thread of it runs until its workers time out (about a
minute); it trains and writes nothing, and gets ``PR_SET_PDEATHSIG`` = SIGKILL (msrun forks it
from its main thread). An msrun worker is inside the same ``init()`` while it waits for every
node to join (up to msrun's ``--cluster_time_out``): ``killed_with_launcher()`` gives it the
same signal for that call only (no line then: the rank has not started training).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

POLL_S = 0.5
EXIT_CODE = 4  # scripts/train.py: "a multi-process run lost a rank or its launcher"
_watching = None  # (parent pid, launcher) once watched


def launched_rank() -> Optional[int]:
    """This process's global rank as the launcher set it (torchrun ``RANK``, msrun
    ``RANK_ID``), before any process group exists; None outside a launcher and in msrun's
    scheduler process (which runs the script too, but trains nothing)."""
    if is_msrun_scheduler():
        return None
    value = os.environ.get("RANK", os.environ.get("RANK_ID"))
    return None if value is None else int(value)


def is_msrun_scheduler() -> bool:
    return os.environ.get("MS_ROLE") == "MS_SCHED"


def under_launcher() -> bool:
    """Started by torchrun, msrun or scripts/launch.sh."""
    return any(key in os.environ for key in ("MOE_LAUNCHER_PID", "TORCHELASTIC_RUN_ID", "MS_ROLE"))


def watch_launcher(poll_s: float = POLL_S) -> bool:
    """Under a launcher, start (once per process) the thread that ends this process when the
    launcher dies; returns whether it watches. A launcher that is already gone ends the
    process here."""
    global _watching
    if _watching or not under_launcher():
        return bool(_watching)
    if is_msrun_scheduler():
        _parent_death_signal(signal.SIGKILL)
    parent = os.getppid()
    launcher = _launcher()
    reason = _gone(parent, launcher)
    if reason:
        _exit(reason)
    thread = threading.Thread(target=_watch, args=(parent, launcher, poll_s), name="launcher-watch", daemon=True)
    thread.start()
    _watching = (parent, launcher)
    return True


def exit_if_launcher_gone() -> None:
    """Exit as the watch would, now, if the launcher is gone: for a rank whose collective
    failed because a peer's watch ended it first, the line names the first cause."""
    if _watching:
        reason = _gone(*_watching)
        if reason:
            _exit(reason)


@contextmanager
def killed_with_launcher() -> Iterator[None]:
    """Around a call that keeps the interpreter lock, so that the watch thread cannot run
    (MindSpore's ``init()``): an msrun worker is SIGKILLed by the kernel if msrun dies meanwhile
    (``PR_SET_PDEATHSIG``; msrun forks its workers from its main thread). Elsewhere nothing."""
    if not _watching or os.environ.get("MS_ROLE") != "MS_WORKER":
        yield
        return
    _parent_death_signal(signal.SIGKILL)
    try:
        exit_if_launcher_gone()  # gone before the signal was set
        yield
    finally:
        _parent_death_signal(0)


def _launcher():
    """(pid, start time) of $MOE_LAUNCHER_PID, or None when unset, this process, or a
    process that started after this one (a recycled pid: the launcher is gone)."""
    try:
        pid = int(os.environ["MOE_LAUNCHER_PID"])
    except (KeyError, ValueError):
        return None
    if pid == os.getpid():
        return None
    started, own = _start_time(pid), _start_time(os.getpid())
    if started is not None and own is not None and started > own:
        return pid, -1  # a recycled pid: never equal to a live start time
    return pid, started


def _watch(parent: int, launcher, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        reason = _gone(parent, launcher)
        if reason:
            _exit(reason)


def _gone(parent: int, launcher) -> Optional[str]:
    """Why this process has lost its launcher, or None."""
    if os.getppid() != parent:
        return f"its launcher (pid {parent}) is gone"
    if launcher is not None and not _alive(*launcher):
        return f"its launcher (pid {launcher[0]}) is gone"
    return None


def _exit(reason: str) -> None:
    rank = launched_rank()
    who = "msrun's scheduler" if is_msrun_scheduler() else "this process" if rank is None else f"rank {rank}"
    line = (f"error: {who}: {reason} (killed?): exiting so that no rank trains without it; "
            f"continue from the last checkpoint with --resume RUN_DIR\n")
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except Exception:  # stderr a pipe whose reader died with the launcher
        pass
    if os.environ.get("MS_ROLE") == "MS_WORKER":
        _stop_msrun_tail()
    os._exit(EXIT_CODE)


def _stop_msrun_tail() -> None:
    """msrun shows a worker's log on its console through ``/usr/bin/tail -f worker_N.log``,
    which outlives a killed msrun: the worker ends the one that follows its own log."""
    try:
        log = os.path.realpath("/proc/self/fd/1").encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        argv = handle.read().split(b"\0")[:-1]
                except OSError:
                    continue
                if len(argv) == 3 and argv[0].endswith(b"tail") and argv[1] == b"-f" and \
                        os.path.realpath(argv[2]) == log:
                    os.kill(int(entry), 15)
    except OSError:
        pass


def _parent_death_signal(signum: int) -> None:
    """PR_SET_PDEATHSIG: ``signum`` when the parent dies, 0 for none (Linux; elsewhere nothing)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signum), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stat(pid: int):
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> Optional[int]:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def _alive(pid: int, started: Optional[int]) -> bool:
    """``pid`` runs, is not a zombie, and (where /proc tells) started at ``started``."""
    fields = _stat(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc (not Linux): existence only
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return fields[0] not in (b"Z", b"X") and (started is None or int(fields[19]) == started)
