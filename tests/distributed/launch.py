"""Start a worker script on N local processes through scripts/run_cpu.sh (torchrun or msrun),
with a wall-clock limit, and read back what each rank saved."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def launch(framework: str, nproc: int, script: Path, args: List[str], log_dir: Path, timeout: int = 400,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run ``script args`` on ``nproc`` processes; on failure the error names the launcher's
    log directory."""
    cmd = ["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", str(nproc), "--framework", framework,
           "--log-dir", str(log_dir), "--timeout", str(timeout), "--script", str(script), *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)
    if check and result.returncode != 0:
        raise AssertionError(f"{framework} x{nproc} {script.name} exited {result.returncode}; logs in {log_dir}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def rank_files(out_dir: Path, world: int) -> List[Dict[str, np.ndarray]]:
    files = [out_dir / f"rank{r}.npz" for r in range(world)]
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, f"ranks wrote no result: {missing}"
    return [dict(np.load(f)) for f in files]


def launch_nodes(framework: str, nodes: int, per_node: int, script: Path, args: List[str], log_dir: Path,
                 timeout: int = 400) -> None:
    """Run ``script args`` as a ``nodes`` x ``per_node`` job on this machine: one
    scripts/launch.sh per node (node ranks 0..nodes-1) on loopback, as on a real cluster."""
    import socket
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    jobs = [subprocess.Popen(["bash", str(ROOT / "scripts" / "launch.sh"), "--nnodes", str(nodes),
                              "--nproc-per-node", str(per_node), "--node-rank", str(k), "--master-port", str(port),
                              "--framework", framework, "--log-dir", str(log_dir / f"node{k}"),
                              "--timeout", str(timeout), "--script", str(script), *args],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for k in range(nodes)]
    outputs = [job.communicate(timeout=timeout + 60)[0] for job in jobs]
    failed = [k for k, job in enumerate(jobs) if job.returncode != 0 and not _second_scheduler(framework, k, log_dir)]
    assert not failed, f"{framework} {nodes}x{per_node} {script.name}: nodes {failed} failed; logs in {log_dir}\n" + \
        "\n".join(outputs[k][-2000:] for k in failed)


def _second_scheduler(framework: str, node: int, log_dir: Path) -> bool:
    """On one machine every msrun finds the master address local and starts a scheduler;
    the one that loses the race for the master port fails and its msrun exits non-zero
    although its workers joined the other scheduler (on a real cluster only node 0 starts
    one). The ranks' results are checked all the same."""
    if framework != "mindspore":
        return False
    log = log_dir / f"node{node}" / "scheduler.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "Address already in use" in text or "Failed to init the tcp server" in text
