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
