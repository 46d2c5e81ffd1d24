"""The trainer on the backend under test: several routers learn a fixed batch; a resumed
run repeats an uninterrupted one (torch CPU: bit for bit; MindSpore: within RESUME_RTOL);
router host-side state (aux_free bias) follows training and survives the checkpoint; a run
of NaN steps stops with the last good checkpoint kept."""
import math
import os
import shutil

import numpy as np
import pytest

from backends.train_step import make_train_step
from models.lm_objective import lm_objective
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.harness import numpy_weights
from training.checkpoint import checkpoint_dir, latest_checkpoint, list_checkpoints, load_checkpoint
from training.config import config_from_dict
from training.metrics_log import read_records
from training.tiny_run import tiny_run_config, write_corpus
from training.trainer import Trainer, TrainingStopped

# MindSpore's CPU kernels may round differently between two compiled graphs (measured: last
# bit of float32); over a few AdamW steps that stays below 1e-5 relative.
RESUME_RTOL = {"torch": 0.0, "mindspore": 1e-5}

ROUTERS = [dict(router="topk", top_k=2),
           dict(router="switch", top_k=1, dispatch="capacity", capacity_factor=1.5),
           dict(router="adamoe", top_k=3, num_null_experts=2)]


@pytest.mark.parametrize("moe", ROUTERS, ids=lambda m: m["router"])
def test_router_learns_a_fixed_batch(runner, moe):
    if runner.name == "mindspore" and moe["router"] != "topk":
        pytest.skip("MindSpore: top-k only (the routers' MindSpore maths is checked against torch in tests/parity)")
    config = TransformerConfig(vocab_size=48, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, ffn_hidden=32,
                               max_seq_len=12, moe_every=1, moe=MoEConfig(d_model=16, ffn_hidden=16, num_experts=4, **moe))
    model = Transformer(config)
    step = make_train_step(runner.name, runner.module(model, numpy_weights(model, seed=1)), lm_objective,
                           lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01, grad_clip=1.0)
    tokens = np.random.default_rng(2).integers(0, 48, (2, 13))
    inputs, targets = (tokens[:, :-1],), (tokens[:, 1:],)
    losses = [step.step(inputs, targets, lr=1e-2)[0] for _ in range(8)]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0] - 0.3, losses  # from ~log(48) = 3.87


def train_losses(run_dir):
    return {r["step"]: r["lm_loss"] for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def runs(runner, tmp_path_factory):
    """A run of 6 steps with the aux_free router, and a copy of its directory taken at the
    step-2 checkpoint that a new Trainer resumes to step 6."""
    graph = os.environ.get("MOE_MS_MODE", "pynative") == "graph"
    moe = {"router": "aux_free", "router_options": {"bias_update_speed": 0.01}}
    root = tmp_path_factory.mktemp("runs")
    corpus = write_corpus(root / "corpus.txt")
    quiet = dict(log=lambda line: None, progress=False, tensorboard=False)
    whole = Trainer(config_from_dict(tiny_run_config(root / "whole", corpus, runner.name, graph, moe=moe)), **quiet)
    whole.run(until=2)
    shutil.copytree(root / "whole", root / "cut")
    whole.run()
    resumed = Trainer(config_from_dict(tiny_run_config(root / "cut", corpus, runner.name, graph, moe=moe)),
                      resume=True, **quiet)
    start = resumed.step
    resumed.run()
    return whole, resumed, start


def test_resumed_run_repeats_the_uninterrupted_one(runner, runs):
    whole, resumed, start = runs
    assert start == 2
    a, b = train_losses(whole.run_dir), train_losses(resumed.run_dir)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert a[1] > a[6]  # it trains
    rtol = RESUME_RTOL[runner.name]
    for step in range(1, 7):
        if rtol == 0:
            assert a[step] == b[step], (step, a[step], b[step])
        else:
            np.testing.assert_allclose(b[step], a[step], rtol=rtol, err_msg=f"step {step}")
    wa, wb = whole.module.numpy_params(), resumed.module.numpy_params()
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], rtol=rtol * 10, atol=rtol, err_msg=name)


def test_router_state_follows_training_and_is_checkpointed(runs):
    whole, _, _ = runs
    name = whole.model.moe_layers[0].router.prefix + "bias"
    bias = whole.module.numpy_params()[name]
    assert np.abs(bias).max() > 0.005  # six updates of +-0.01
    saved = load_checkpoint(latest_checkpoint(checkpoint_dir(whole.run_dir)))
    assert saved.step == 6
    np.testing.assert_array_equal(saved.model[name], bias)
    assert [p.name for p in list_checkpoints(checkpoint_dir(whole.run_dir))] == [
        "step_00000002.safetensors", "step_00000004.safetensors", "step_00000006.safetensors"]


def test_nan_steps_stop_the_run_and_keep_the_last_good_checkpoint(runs):
    _, resumed, _ = runs
    resumed.config.train.steps = 10
    resumed.config.train.max_bad_steps = 2
    good = load_checkpoint(latest_checkpoint(checkpoint_dir(resumed.run_dir)))
    poisoned = {k: v.copy() for k, v in resumed.module.numpy_params().items()}
    poisoned["model.norm.weight"][0] = np.nan  # diverged weights: every loss is NaN from here
    resumed.module.load_numpy(poisoned)
    with pytest.raises(TrainingStopped, match="max_bad_steps=2.*step_00000006"):
        resumed.run()
    assert resumed.skipped == 2 and resumed.step == 8
    last = [r for r in read_records(resumed.run_dir / "metrics.jsonl") if r["kind"] == "train"][-1]
    assert (last["step"], last["skipped"]) == (8, 2)
    kept = load_checkpoint(latest_checkpoint(checkpoint_dir(resumed.run_dir)))
    assert kept.step == good.step == 6
    assert all(np.isfinite(v).all() for v in kept.model.values())
