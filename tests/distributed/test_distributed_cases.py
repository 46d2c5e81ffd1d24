"""Multi-process training in the corners a cluster user reaches (torchrun and msrun on CPU):

- capacity dispatch is per source rank, as in Megatron: W ranks (with gradient accumulation
  over k micro-batches each) equal one process with W k micro-batches, whose capacity is
  per micro-batch, the same rows (no balance loss: its counts are the global batch's);
  the whole batch in one process (one capacity for all) trains differently;
- bfloat16 (torch) / float16 (MindSpore on CPU) with expert parallelism and with data
  parallelism alone: the same training as one process, within low-precision tolerance;
- the hierarchical all-to-all inside a training run with data parallelism 2 (4 nodes of 2
  ranks, EP 4: each EP group spans two nodes), onto the single-process weights;
- resharding on MindSpore: an EP-2 checkpoint written by the distributed optimizer (the
  replicated parameters' moments sharded over the 2 ranks) resumes in one process onto the
  uninterrupted run;
- the distributed optimizer's float32 masters: the low-precision data-parallel runs shard
  them (and the moments) over the 2 ranks and still land on the single process.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.distributed.launch import ROOT, launch_nodes
from tests.distributed.test_distributed_resume import resumed_copy
from tests.distributed.test_distributed_training import (  # noqa: F401
    assert_same_weights, corpus, final_model, torch_reference, torch_reference_dir, train_launched, train_single,
    write_config)
from training.metrics_log import read_records

CAPACITY = {"router": "topk", "top_k": 2, "dispatch": "capacity", "capacity_factor": 1.0,
            "balance_loss_coef": 0.0}


def records(run: Path) -> dict:
    return {r["step"]: r for r in read_records(run / "metrics.jsonl") if r["kind"] == "train"}


def max_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


@pytest.fixture(scope="module")
def capacity_references(tmp_path_factory, corpus):  # noqa: F811
    """One process with 4 micro-batches (the per-rank reference of 4 ranks, or of 2 ranks of 2
    micro-batches each), and one process on the whole batch at once."""
    root = tmp_path_factory.mktemp("capacity")
    train_single(write_config(root / "ref.yaml", corpus, "torch", root / "ref", moe=CAPACITY, train={"grad_accum": 4}))
    train_single(write_config(root / "whole.yaml", corpus, "torch", root / "whole", moe=CAPACITY))
    return root / "ref", root / "whole"


@pytest.mark.parametrize("world, ep, accum", [(2, 2, 2), (4, 2, 1)], ids=["ep2-accum2", "ep2-dp2"])
def test_capacity_is_per_source_rank(tmp_path, corpus, capacity_references, world, ep, accum):  # noqa: F811
    ref, whole = capacity_references
    assert world * accum == 4
    config = write_config(tmp_path / "c.yaml", corpus, "torch", tmp_path / "run", moe=CAPACITY,
                          parallel={"expert_parallel": ep}, train={"grad_accum": accum})
    train_launched(world, tmp_path / "logs", "--config", str(config))
    multi, reference = final_model(tmp_path / "run"), final_model(ref)
    assert_same_weights(multi, reference)
    assert max_difference(final_model(whole), reference) > 1e-3  # one capacity for the whole batch differs
    a, b = records(tmp_path / "run"), records(ref)
    assert max(a[s]["dropped_fraction"] for s in a) > 0.05  # capacity drops
    for step in a:  # the global ratio: all ranks' drops over all their requests
        np.testing.assert_allclose(a[step]["dropped_fraction"], b[step]["dropped_fraction"], rtol=1e-5, atol=1e-7)


LOW = {"torch": "bfloat16", "mindspore": "float16"}  # MindSpore's CPU kernels lack bfloat16
# low precision over a different summation order (per-rank rows): loss within 2 %, weights within a few
# AdamW steps' lr of each other
LOW_RTOL, LOW_ATOL = 2e-2, 1.5e-2


_low_references = {}


def low_reference(backend: str, corpus: Path, root: Path) -> Path:  # noqa: F811
    """The single-process low-precision run of ``backend`` (trained at first use)."""
    if backend not in _low_references:
        run = root / f"low_{backend}"
        train_single(write_config(root / f"low_{backend}.yaml", corpus, backend, run, dtype=LOW[backend],
                                  train={"steps": 4}))
        _low_references[backend] = run
    return _low_references[backend]


@pytest.mark.parametrize("backend, ep", [("torch", 2), ("torch", 1), ("mindspore", 2), ("mindspore", 1)],
                         ids=["torch-ep2", "torch-dp2", "mindspore-ep2", "mindspore-dp2"])
def test_low_precision_training_with_expert_and_data_parallelism(tmp_path, tmp_path_factory, corpus,  # noqa: F811
                                                                 backend, ep):
    ref = low_reference(backend, corpus, tmp_path_factory.getbasetemp())
    config = write_config(tmp_path / "c.yaml", corpus, backend, tmp_path / "run", dtype=LOW[backend],
                          train={"steps": 4, "distributed_optimizer": ep == 1}, parallel={"expert_parallel": ep})
    train_launched(2, tmp_path / "logs", "--config", str(config))
    a, b = records(tmp_path / "run"), records(ref)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert np.isfinite(a[step]["loss"]) and np.isfinite(a[step]["grad_norm"])
        np.testing.assert_allclose(a[step]["loss"], b[step]["loss"], rtol=LOW_RTOL, err_msg=f"loss step {step}")
    multi, reference = final_model(tmp_path / "run"), final_model(ref)
    assert all(value.dtype == np.float32 for value in multi.values())  # float32 masters are checkpointed
    for name in reference:
        np.testing.assert_allclose(multi[name], reference[name], rtol=LOW_RTOL, atol=LOW_ATOL, err_msg=name)


def test_hierarchical_all_to_all_in_training_with_data_parallelism(tmp_path, corpus, torch_reference):  # noqa: F811
    config = write_config(tmp_path / "c.yaml", corpus, "torch", tmp_path / "run",
                          parallel={"expert_parallel": 4, "all_to_all": "hierarchical"})
    launch_nodes("torch", 4, 2, ROOT / "scripts" / "train.py", ["--config", str(config), "--no-progress"],
                 tmp_path / "logs", timeout=500)
    started = (tmp_path / "run" / "logs" / "rank0.log").read_text()
    assert "8 ranks on 4 node(s), expert parallel 4 (hierarchical all-to-all)" in started, started[:600]
    assert_same_weights(final_model(tmp_path / "run"), torch_reference)
    across = [r["a2a_bytes_across_nodes"] for r in records(tmp_path / "run").values()]
    assert min(across) > 0  # tokens did cross nodes


def test_mindspore_checkpoint_at_ep2_resumes_in_one_process(tmp_path, corpus):  # noqa: F811
    """Resharding on MindSpore: the step-2 checkpoint of an EP-2 run with the distributed
    optimizer (main file and two expert shards, whole moments) resumes in one process (EP 1)
    to step 4, onto the uninterrupted run. (EP 2 x DP 2, experts' moments sharded too, is
    torch's test_validation_in_a_multi_process_run_equals_single_process: four MindSpore ranks
    cost minutes here.)"""
    config = write_config(tmp_path / "c.yaml", corpus, "mindspore", tmp_path / "ep2",
                          train={"steps": 4, "distributed_optimizer": True}, parallel={"expert_parallel": 2})
    train_launched(2, tmp_path / "logs", "--config", str(config))
    cut = resumed_copy(tmp_path / "ep2", 2, tmp_path / "ep1")
    saved = yaml.safe_load((cut / "config.yaml").read_text())
    saved["parallel"]["expert_parallel"] = 1
    (cut / "config.yaml").write_text(yaml.safe_dump(saved))
    assert len(list((cut / "checkpoints").glob("step_00000002.experts*"))) == 2
    train_single(cut / "config.yaml", "--resume", str(cut))
    assert_same_weights(final_model(cut), final_model(tmp_path / "ep2"))
