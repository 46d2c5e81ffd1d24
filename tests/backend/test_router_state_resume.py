"""Router host state goes through the checkpoint: LocMoE+ keeps its measured capacity factor
on the router (re-estimated after step 1 and every ``capacity_interval`` = 3 steps: steps 1
and 4 here), not in a parameter. A run cut at step 2 and resumed ends with the router state
of the uninterrupted run; a resume that forgot it would count 4 measurements instead of 6
and take its factor from steps 3 and 6. Checkpoints from before router state was saved
still resume.

Framework-free trainer plumbing, run once, on torch: the router's state on MindSpore goes
through the same contract (tests/backend/test_router_host_state.py), and a MindSpore LocMoE+
run resumes bitwise at EP 2 (tests/distributed/test_distributed_resume.py)."""
import os
import shutil

import numpy as np
import pytest

from training.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import config_from_dict
from training.tiny_run import tiny_run_config, write_corpus
from training.trainer import Trainer

RTOL = {"torch": 0.0, "mindspore": 1e-5}  # MindSpore: see RESUME_RTOL in test_trainer.py
MOE = {"router": "locmoe_plus", "top_k": 2, "router_options": {"capacity_interval": 3}}
QUIET = dict(log=lambda line: None, progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def runs(runner, tmp_path_factory):
    """(uninterrupted 6-step run, the same run resumed from its step-2 checkpoint, root)."""
    if runner.name != "torch":
        pytest.skip("framework-free trainer plumbing: run once, on torch (see the module docstring)")
    graph = os.environ.get("MOE_MS_MODE", "pynative") == "graph"
    root = tmp_path_factory.mktemp("router_state")
    corpus = write_corpus(root / "corpus.txt", sentences=600)

    def trainer(name, resume=False):
        raw = tiny_run_config(root / name, corpus, runner.name, graph, moe=MOE)
        return Trainer(config_from_dict(raw), resume=resume, **QUIET)

    whole = trainer("whole")
    whole.run(until=2)
    shutil.copytree(root / "whole", root / "cut")
    whole.run()
    resumed = trainer("cut", resume=True)
    resumed.run()
    return whole, resumed, trainer


def router_states(trainer):
    return [layer.router.state_dict() for layer in trainer.model.moe_layers]


def test_the_router_state_is_measured_and_checkpointed(runs):
    whole, _, _ = runs
    states = router_states(whole)
    assert states and all(state["updates"] == 6 for state in states), states
    saved = load_checkpoint(latest_checkpoint(checkpoint_dir(whole.run_dir)))
    assert [saved.state["routers"][layer.router.prefix] for layer in whole.model.moe_layers] == states


def test_a_resumed_run_ends_with_the_uninterrupted_runs_router_state(runner, runs):
    whole, resumed, _ = runs
    assert resumed.step == whole.step == 6
    for expected, got in zip(router_states(whole), router_states(resumed)):
        assert got["updates"] == expected["updates"]
        np.testing.assert_allclose(got["factor"], expected["factor"], rtol=RTOL[runner.name])


def test_a_checkpoint_without_router_state_still_resumes(runs):
    whole, _, trainer = runs
    old = whole.run_dir.parent / "old"
    shutil.copytree(whole.run_dir, old)
    checkpoint = load_checkpoint(latest_checkpoint(checkpoint_dir(old)))
    del checkpoint.state["routers"]  # as written before router state was saved
    save_checkpoint(checkpoint_dir(old), checkpoint, keep=3)
    assert "routers" not in load_checkpoint(latest_checkpoint(checkpoint_dir(old))).state
    fresh = trainer("old", resume=True)
    assert fresh.step == 6
    assert all(state["updates"] == 0 for state in router_states(fresh))
