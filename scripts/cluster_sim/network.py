"""The simulated cluster's network: two Linux network namespaces (the nodes) joined by one
veth pair whose rate ``tc tbf`` limits, a launcher per node inside its namespace, and the
link's byte counters. Root only; everything is removed by ``Cluster.remove``."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from scripts.cluster_sim.outcome import Failure
from scripts.reporting.provenance import ROOT

NODES, RANKS_PER_NODE = 2, 2
WORLD = NODES * RANKS_PER_NODE
SUBNET = "10.200.0"


def sh(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run a short system command (ip, tc) with a timeout; a failure is one line."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result


class Cluster:
    """Namespaces ``<prefix>0`` and ``<prefix>1`` joined by veth ``<prefix>0v`` <-> ``<prefix>1v``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.holder: Optional[subprocess.Popen] = None

    def ns(self, node: int) -> str:
        return f"{self.prefix}{node}"

    def veth(self, node: int) -> str:
        return f"{self.prefix}{node}v"

    def addr(self, node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    def remove(self) -> None:
        """Delete everything of this prefix (idempotent): processes inside the namespaces
        (by pid), the namespaces (which takes the veth and its qdiscs along), a stray veth."""
        existing = sh("ip", "netns", "list", check=False).stdout.split()
        for node in range(NODES):
            if self.ns(node) not in existing:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = [int(p) for p in sh("ip", "netns", "pids", self.ns(node), check=False).stdout.split()]
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if pids and sig == signal.SIGTERM:
                    time.sleep(1.0)
            sh("ip", "netns", "del", self.ns(node), check=False)
        sh("ip", "link", "del", self.veth(0), check=False)  # a pair left in the root namespace
        if self.holder is not None:
            self.holder.wait(10)
            self.holder = None

    def build(self) -> None:
        """Fresh namespaces, veth pair with addresses, loopback up; a holder process in node 0
        whose /proc/<pid>/net/dev shows the namespace's counters."""
        self.remove()
        for node in range(NODES):
            sh("ip", "netns", "add", self.ns(node))
        sh("ip", "link", "add", self.veth(0), "type", "veth", "peer", "name", self.veth(1))
        for node in range(NODES):
            sh("ip", "link", "set", self.veth(node), "netns", self.ns(node))
            sh("ip", "-n", self.ns(node), "addr", "add", f"{self.addr(node)}/24", "dev", self.veth(node))
            sh("ip", "-n", self.ns(node), "link", "set", "lo", "up")
            sh("ip", "-n", self.ns(node), "link", "set", self.veth(node), "up")
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.ns(0), "sleep", "86400"])

    def set_rate(self, mbit: int) -> None:
        """tbf on both veth ends: each direction limited to ``mbit``; burst 1 ms of traffic
        (at least 64 KiB, one GSO packet), queue up to 100 ms."""
        burst = max(64 * 1024, mbit * 1_000_000 // 8 // 1000)
        for node in range(NODES):
            sh("tc", "-n", self.ns(node), "qdisc", "replace", "dev", self.veth(node), "root", "tbf",
               "rate", f"{mbit}mbit", "burst", str(burst), "latency", "100ms")

    def link_bytes(self) -> int:
        """rx + tx bytes of node 0's veth end (= everything that crossed the link)."""
        assert self.holder is not None
        for line in Path(f"/proc/{self.holder.pid}/net/dev").read_text().splitlines():
            name, _, counters = line.partition(":")
            if name.strip() == self.veth(0):
                fields = counters.split()
                return int(fields[0]) + int(fields[8])
        raise Failure(f"{self.veth(0)} is missing from node 0's namespace")

    def launch(self, node: int, framework: str, port: int, log_dir: Path, timeout: int,
               train_args: Sequence[str], log: Path) -> subprocess.Popen:
        """Node ``node``'s launcher inside its namespace, with its own hostname (MindSpore
        groups ranks into nodes by host) and gloo bound to its veth."""
        launcher = ["bash", str(ROOT / "scripts" / "launch.sh"), "--nnodes", str(NODES), "--nproc-per-node",
                    str(RANKS_PER_NODE), "--node-rank", str(node), "--master-addr", self.addr(0),
                    "--master-port", str(port), "--log-dir", str(log_dir / f"node{node}"),
                    "--timeout", str(timeout), "--framework", framework, *train_args]
        cmd = ["ip", "netns", "exec", self.ns(node), "unshare", "--uts", "sh", "-c",
               f'hostname {self.ns(node)} && exec "$@"', "sh", *launcher]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": self.veth(node)}
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
