"""Run under a launcher (torchrun, msrun): every rank joins the run directory as the trainer
does (``training.distributed.Distributed.join_run_dir``) and picks the checkpoint to resume
from (``Distributed.agreed_checkpoint``) in each of the four MODES, one after the other in one
launch, and writes what happened to OUT/<mode>/rank<r>.txt (the outcome or the error line).

    run_dir_worker.py BACKEND OUT_DIR

``shared``: every rank uses OUT/shared/shared. ``split``: rank 0 uses OUT/split/shared, every
other rank OUT/split/node<r>: a run directory that is not on a filesystem the ranks share
(each node sees its own local folder); both write ``ok`` or the error line. ``resume_*``: each
rank has a checkpoint folder of its own, as ranks whose NFS caches show different files:
``resume_newer``: rank 1 sees a step 6 that rank 0 does not (yet); ``resume_missing``: rank 1
does not see rank 0's step 4; they write ``step <N>`` or the error line."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from core.errors import ConfigError  # noqa: E402
from launch.process_groups import close_process_groups, init_process_groups  # noqa: E402
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


MODES = ("shared", "split", "resume_newer", "resume_missing")


def outcome(dist: Distributed, out: Path, mode: str) -> str:
    """What ``mode`` gives on this rank: its result, or the one-line error every rank raised."""
    run_dir = out / ("shared" if mode == "shared" or dist.is_main else f"node{dist.rank}")
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if mode.startswith("resume"):
            return resume(dist, run_dir, mode)
        dist.join_run_dir(run_dir, TIMEOUT_S)
        return "ok"
    except ConfigError as error:
        return str(error)


def main() -> int:
    backend, out = sys.argv[1], Path(sys.argv[2])
    run = init_process_groups(backend, "cpu", 1, timeout_s=60)
    if backend == "torch":
        from backends.torch_ops import TorchOps
        F = TorchOps("cpu")
    else:
        from backends.mindspore_ops import MindSporeOps
        F = MindSporeOps()
    for mode in MODES:
        dist = Distributed(run, F)
        (out / mode).mkdir(parents=True, exist_ok=True)
        (out / mode / f"rank{dist.rank}.txt").write_text(outcome(dist, out / mode, mode), encoding="utf-8")
    close_process_groups(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
