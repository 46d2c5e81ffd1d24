"""Run under a launcher (torchrun, msrun): every rank joins the run directory as the trainer
does (``training.distributed.Distributed.join_run_dir``) and writes what happened to
OUT/rank<r>.txt (``ok`` or the error line).

    run_dir_worker.py BACKEND OUT_DIR shared|split|resume_newer|resume_missing

``split``: rank 0 uses OUT/shared, every other rank OUT/node<r>: a run directory that is not
on a filesystem the ranks share (each node sees its own local folder). ``resume_*``: every
rank picks the checkpoint to resume from (``Distributed.agreed_checkpoint``) in a
checkpoint folder of its own, as ranks whose NFS caches show different files:
``resume_newer``: rank 1 sees a step 6 that rank 0 does not (yet); ``resume_missing``: rank 1
does not see rank 0's step 4; it writes ``step <N>`` or the error line."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from core.errors import ConfigError  # noqa: E402
from launch.process_groups import init_process_groups  # noqa: E402
from training.checkpoint import Checkpoint, checkpoint_dir, save_checkpoint  # noqa: E402
from training.distributed import Distributed  # noqa: E402

TIMEOUT_S = 4.0  # a blind rank is reported after min(90, TIMEOUT_S / 2) s


def resume(dist: Distributed, run_dir: Path, mode: str) -> str:
    steps = (2, 4) if dist.is_main else {"resume_newer": (2, 4, 6), "resume_missing": (2,)}[mode]
    for step in steps:
        save_checkpoint(checkpoint_dir(run_dir), Checkpoint(step=step, model={"w": np.full(3, step, np.float32)},
                                                            optimizer={}, rng={}), keep=5)
    _, checkpoint = dist.agreed_checkpoint(checkpoint_dir(run_dir), print, {})
    assert float(checkpoint.model["w"][0]) == checkpoint.step
    return f"step {checkpoint.step}"


def main() -> int:
    backend, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    run = init_process_groups(backend, "cpu", 1, timeout_s=60)
    if backend == "torch":
        from backends.torch_ops import TorchOps
        F = TorchOps("cpu")
    else:
        from backends.mindspore_ops import MindSporeOps
        F = MindSporeOps()
    dist = Distributed(run, F)
    run_dir = out / ("shared" if mode == "shared" or dist.is_main else f"node{dist.rank}")
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if mode.startswith("resume"):
            outcome = resume(dist, run_dir, mode)
        else:
            dist.join_run_dir(run_dir, TIMEOUT_S)
            outcome = "ok"
        code = 0
    except ConfigError as error:
        outcome, code = str(error), 2
    (out / f"rank{dist.rank}.txt").write_text(outcome, encoding="utf-8")
    if backend == "torch":  # a clean exit: gloo's threads stopped before the interpreter ends
        import torch.distributed
        torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
