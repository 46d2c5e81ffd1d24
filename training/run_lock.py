"""One writer per run directory: ``RUN_DIR/run.lock``.

The first process of a job (rank 0, or the only process) takes an exclusive ``fcntl`` lock on
the file before anything is written in the run directory, writes who holds it (host, pid,
start time, command) into it, and keeps it until the process ends: the kernel drops the lock
when the process exits or is killed, whatever the cause. The other ranks take nothing: they
cannot pass the launcher's rendezvous before rank 0 has the lock, and they write nothing
before it.

- A second job (fresh or ``--resume``, one process or many) is refused with one
  ``ConfigError`` line naming the holder. ``scripts/launch.sh`` asks the same question
  (``check_run_dir_free``, through ``train.py --print-backend``) before it starts a launcher.
- A lock file whose holder is gone (killed, crashed: the file names it, nobody holds the
  lock) is taken over, and the takeover is logged with the old holder.
- A holder that still runs on this host while nobody holds its lock means the filesystem
  does not implement ``fcntl`` locks: refused as well, since the file's record is all there
  is to go by.
- Across hosts: ``fcntl`` locks reach other hosts only where the shared filesystem carries
  them (NFSv3 with lockd, NFSv4, Lustre mounted with ``flock``, GPFS, CephFS); a holder on
  another host cannot be checked for life, so a free lock whose record names another host is
  taken over with a line saying so. Where a filesystem keeps locks per host, two jobs on two
  hosts are not stopped; on a filesystem without locks at all a job on this host still is,
  through the record.

Within one process the lock is re-entrant (a second ``Trainer`` on the same run directory,
as the tests make, shares it); ``RunLock.release`` clears the record before it unlocks.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from core.errors import ConfigError
from launch.launcher_watch import is_msrun_scheduler, launched_rank

LOCK_NAME = "run.lock"
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: Dict[str, "RunLock"] = {}  # lock file (real path) -> this process's lock on it


class RunLock:
    """This process's lock on one run directory: ``fd`` stays open as long as it is held."""

    def __init__(self, path: Path, fd: int, key: str) -> None:
        self.path, self.fd, self.key, self.count = path, fd, key, 1

    def release(self) -> None:
        self.count -= 1
        if self.count > 0 or self.key not in _held:
            return
        del _held[self.key]
        try:
            os.ftruncate(self.fd, 0)  # no record: nobody to take over from
        finally:
            os.close(self.fd)  # closing the descriptor drops the lock


def takes_lock() -> bool:
    """Whether this process takes the run directory's lock: the only process, or the job's
    rank 0 (not msrun's scheduler, which runs the script too)."""
    return not is_msrun_scheduler() and launched_rank() in (None, 0)


def lock_run_dir(run_dir: Path, log: Callable[[str], None] = print) -> RunLock:
    """Create ``run_dir`` if needed and take its lock, or raise ``ConfigError`` naming the
    job that holds it; a stale lock is taken over (logged)."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run_dir={str(run_dir)!r}: cannot write there ({error.strerror or error})") from None
    key = os.path.realpath(path)
    if key in _held:  # this process holds it already (opening the file again and closing it would drop the lock)
        _held[key].count += 1
        return _held[key]
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"run_dir={str(run_dir)!r}: cannot write there ({error.strerror or error})") from None
    try:
        locked = _try_lock(fd)
        previous = _read(fd)
        if locked is False:
            raise ConfigError(_busy(run_dir, path, previous or _read_again(fd)))
        _check_stale(run_dir, path, previous, locked, log)
        _write_record(fd)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = lock = RunLock(path, fd, key)
    return lock


def check_run_dir_free(run_dir: Path) -> None:
    """``ConfigError`` naming the holder when another job holds ``run_dir``'s lock; takes
    nothing and writes nothing (the launch scripts' check before a launcher starts)."""
    path = Path(run_dir) / LOCK_NAME
    if os.path.realpath(path) in _held:
        return  # ours (and opening it again here would drop it when closed)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # no lock file (a new run), or one we cannot open: the ranks will say
    try:
        locked = _try_lock(fd)
        previous = _read(fd)
        if locked is False:
            raise ConfigError(_busy(Path(run_dir), path, previous or _read_again(fd)))
        if previous and previous.get("host") == socket.gethostname() and _holder_alive(previous) \
                and previous.get("pid") != os.getpid():
            raise ConfigError(_unlocked_holder(Path(run_dir), path, previous))
    finally:
        os.close(fd)


def _try_lock(fd: int) -> Optional[bool]:
    """True: locked; False: another process holds it; None: the filesystem has no locks."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            return False
        if error.errno in NO_LOCKS:
            return None
        raise


def _read(fd: int) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {"unreadable": text[:80]}
    return record if isinstance(record, dict) else {"unreadable": text[:80]}


def _read_again(fd: int) -> Optional[dict]:
    """The holder writes its record just after it locks: give it a moment."""
    for _ in range(10):
        time.sleep(0.1)
        record = _read(fd)
        if record:
            return record
    return None


def _write_record(fd: int) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "process_start": _process_start(os.getpid()), "command": " ".join(sys.argv)[:500]}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    os.fsync(fd)


def describe(record: Optional[dict]) -> str:
    """'pid 123 on host h, started 2026-12-07 18:02:17, command '...''."""
    if not record:
        return "a process that has not written its name yet"
    if "unreadable" in record:
        return f"a process whose record is unreadable ({record['unreadable']!r})"
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    command = f", command {record['command']!r}" if record.get("command") else ""
    return f"pid {record.get('pid')} on host {record.get('host')}, started {when}{command}"


def _busy(run_dir: Path, path: Path, record: Optional[dict]) -> str:
    return (f"run_dir={str(run_dir)!r} is in use by another job: {describe(record)} holds {path}; stop that "
            f"job first (docs/guide/distributed.md: Stopping a job) or set another run_dir")


def _unlocked_holder(run_dir: Path, path: Path, record: dict) -> str:
    return (f"run_dir={str(run_dir)!r}: {path} names a job that still runs on this host ({describe(record)}) "
            f"although nobody holds its lock: this filesystem does not seem to support fcntl locks; stop that "
            f"job first, or delete {path} if it is not writing there")


def _check_stale(run_dir: Path, path: Path, previous: Optional[dict], locked: Optional[bool],
                 log: Callable[[str], None]) -> None:
    """We hold the lock (or the filesystem has none): refuse a holder that still runs here,
    log the takeover of one that is gone."""
    if locked is None:
        log(f"{path}: this filesystem does not support fcntl locks: only jobs on this host can be "
            f"detected, through the file's record")
    if not previous or previous.get("pid") == os.getpid() and previous.get("host") == socket.gethostname():
        return
    if previous.get("host") == socket.gethostname():
        if _holder_alive(previous):
            raise ConfigError(_unlocked_holder(run_dir, path, previous))
        log(f"{path}: the job that held it ({describe(previous)}) is gone: lock taken over")
    elif "unreadable" in previous:
        log(f"{path}: unreadable record ({previous['unreadable']!r}) replaced: lock taken over")
    else:
        log(f"{path}: lock taken over from {describe(previous)}: nobody held it any more (if that job still "
            f"runs, this filesystem does not carry fcntl locks between hosts: stop one of the two)")


def _holder_alive(record: dict) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = _process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return not os.path.isdir("/proc/self")  # no /proc: existence is all we know
    recorded = record.get("process_start")
    return recorded is None or recorded == start


def _process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (tells a recycled pid), None if
    it does not exist, is a zombie, or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])
