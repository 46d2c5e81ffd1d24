"""The collectives of our torch vocabulary (``F.all_reduce``, ``F.all_gather``,
``F.all_to_all`` with its gradient) on a one-process torch.distributed group: NCCL on a
CUDA device, gloo on the CPU. One GPU allows one NCCL rank, so this proves that NCCL starts
and that our calls run through it; the exchanges between ranks are tests/distributed's.

    python3 -m scripts.device_check.collectives --device cuda --json result.json
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.device_check.result import finish  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(device: str) -> Dict[str, Any]:
    """Start the group, run each collective on known values, compare; the result row."""
    import torch
    import torch.distributed as dist

    from backends.torch_ops import TorchOps
    backend = "nccl" if device == "cuda" else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        F = TorchOps(device)
        group = dist.group.WORLD
        x = torch.arange(12, dtype=torch.float32, device=device).reshape(6, 2).requires_grad_()
        checks = {
            "all_reduce": np.array_equal(F.to_numpy(F.all_reduce(x.detach(), group)), F.to_numpy(x.detach())),
            "all_gather": np.array_equal(F.to_numpy(F.all_gather(x.detach(), group)), F.to_numpy(x.detach())),
        }
        moved = F.all_to_all(x, [5], [5], group)  # the sixth row is past the rows sent
        (moved * 2.0).sum().backward()
        expected_grad = np.r_[np.full((5, 2), 2.0), np.zeros((1, 2))]
        checks["all_to_all"] = np.array_equal(F.to_numpy(moved.detach()), F.to_numpy(x.detach())[:5])
        checks["all_to_all gradient"] = np.array_equal(F.to_numpy(x.grad), expected_grad)
        if device == "cuda":
            torch.cuda.synchronize()
    finally:
        dist.destroy_process_group()
    failed = [name for name, ok in checks.items() if not ok]
    summary = f"{backend}, world size 1: " + (f"wrong result: {', '.join(failed)}" if failed else
                                               f"{', '.join(checks)} correct")
    return {"status": "fail" if failed else "pass", "summary": summary, "backend": backend, "checks": checks}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", metavar="PATH", help="write the result here")
    args = parser.parse_args(argv)
    return finish("collectives", run(args.device), args.json)


if __name__ == "__main__":
    sys.exit(main())
