"""Resume in a multi-process run lands bitwise on the uninterrupted run for every router
whose step draws random numbers (skip, balanced) or keeps host-side state after each step
(aux_free's bias, LocMoE's measured capacity factor, LocMoE+'s refresh schedule): a 4-step
run at EP 2 over 2 processes checkpoints at step 2; a copy of that checkpoint resumed to
step 4 ends on the same weights, router state and logged metrics.

Routing noise is drawn from (seed, step, row of the global batch) (training.random_streams),
and every rank's generators are in the checkpoint: before, every rank resumed with rank 0's
generator state and the stochastic routers drifted (4.7e-3 on skip)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.distributed.test_distributed_training import corpus, train_launched, write_config  # noqa: F401
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.metrics_log import read_records

ROUTERS = {
    "skip": {"router": "skip", "top_k": 1, "dispatch": "capacity", "capacity_factor": 1.0},
    "balanced": {"router": "balanced", "top_k": 1},
    "aux_free": {"router": "aux_free", "top_k": 2, "balance_loss_coef": 0.0,
                 "router_options": {"bias_update_speed": 0.01}},
    "locmoe": {"router": "locmoe", "top_k": 1, "dispatch": "capacity", "capacity_factor": 1.0},
    "locmoe_plus": {"router": "locmoe_plus", "top_k": 2, "dispatch": "capacity",
                    "router_options": {"capacity_interval": 2}},
}
CASES = [("torch", name) for name in ROUTERS] + [("mindspore", "skip"), ("mindspore", "locmoe_plus")]
# MindSpore's CPU kernels may round differently between two graphs (tests/backend/test_trainer.py)
RTOL = {"torch": 0.0, "mindspore": 1e-5}


def resumed_copy(run: Path, step: int, target: Path) -> Path:
    """A new run directory holding ``run``'s config and its checkpoint at ``step`` (main file
    and expert shards)."""
    (target / "checkpoints").mkdir(parents=True)
    for f in (run / "checkpoints").glob(f"step_{step:08d}*"):
        shutil.copy(f, target / "checkpoints" / f.name)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["run_dir"] = str(target)
    (target / "config.yaml").write_text(yaml.safe_dump(saved))
    return target


def train_records(run: Path) -> dict:
    return {r["step"]: r for r in read_records(run / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.parametrize("backend, router", CASES, ids=[f"{b}-{r}" for b, r in CASES])
def test_resume_is_bitwise_the_uninterrupted_run(tmp_path, corpus, backend, router):  # noqa: F811
    config = write_config(tmp_path / "c.yaml", corpus, backend, tmp_path / "whole", moe=ROUTERS[router],
                          parallel={"expert_parallel": 2}, train={"steps": 4, "eval_every": 2})
    train_launched(2, tmp_path / "logs_whole", "--config", str(config))
    cut = resumed_copy(tmp_path / "whole", 2, tmp_path / "cut")
    train_launched(2, tmp_path / "logs_cut", "--resume", str(cut))
    whole = load_checkpoint(latest_checkpoint(tmp_path / "whole" / "checkpoints"))
    resumed = load_checkpoint(latest_checkpoint(cut / "checkpoints"))
    assert whole.step == resumed.step == 4
    rtol = RTOL[backend]
    for name, value in whole.model.items():
        if rtol == 0:
            np.testing.assert_array_equal(resumed.model[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(resumed.model[name], value, rtol=rtol, atol=1e-7, err_msg=name)
    assert resumed.state.get("routers") == whole.state.get("routers")
    a, b = train_records(tmp_path / "whole"), train_records(cut)
    for step in (3, 4):
        for key in ("loss", "dropped_fraction"):
            np.testing.assert_allclose(b[step][key], a[step][key], rtol=max(rtol, 1e-7), err_msg=f"{key} step {step}")
    # every rank's generator state is in the checkpoint, not rank 0's for all
    assert {name.split("/")[0] for name in whole.rng} == {"rank0", "rank1"}
