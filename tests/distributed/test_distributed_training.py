"""Training on several processes (scripts/run_cpu.sh: torchrun + gloo, msrun on MindSpore's
CPU backend) equals training in one process on the same global batch: final weights after
the same steps, with gradient clipping active, at several expert-parallel sizes; a
checkpoint saved at EP=2 resumes at EP=1 and EP=4 onto the uninterrupted run; a rank
killed mid-step ends the job non-zero, naming ranks, well within the timeout. The
distributed optimizer (``train.distributed_optimizer``: AdamW state sharded over the
data-parallel groups) rides in three of these launches: EP 2 x DP 2 on torch, DP 2 on
MindSpore, and the EP-2 checkpoint that resumes in one process and on 4 ranks.

Tolerance: float32 weights after 6 AdamW steps, summed in another order across ranks:
rtol 2e-4, atol 2e-5 (measured differences are ~1e-6)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.distributed.launch import ROOT
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.metrics_log import read_records
from training.tiny_run import tiny_run_config, write_corpus

RTOL, ATOL = 2e-4, 2e-5
CLIP = {"grad_clip": 0.05, "eval_every": 3}  # small enough that every step is clipped; validation at 0, 3, 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "text.txt")


def write_config(path: Path, corpus: Path, backend: str, run_dir: Path, **sections) -> Path:
    train = {**CLIP, "batch_size": 8, "steps": 6, **sections.pop("train", {})}
    raw = tiny_run_config(run_dir, corpus, backend, train=train, **sections)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def train_single(config: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config),
                             "--no-progress", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def train_launched(nproc: int, log_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", str(nproc), "--log-dir",
                             str(log_dir), "--timeout", "500", *args, "--no-progress"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"logs in {log_dir}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def final_model(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(Path(run_dir) / "checkpoints")).model


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def torch_reference_dir(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("torch_single")
    train_single(write_config(root / "c.yaml", corpus, "torch", root / "run"))
    return root / "run"


@pytest.fixture(scope="module")
def torch_reference(torch_reference_dir):
    return final_model(torch_reference_dir)


# EP=4 over 4 processes trains in test_checkpoint_at_ep2_resumes_at_ep1_and_ep4 (steps 5-6 onto the same reference)
@pytest.mark.parametrize("world, ep", [(2, 2)])  # world 4 / EP 2: test_validation_in_a_multi_process_run...
def test_torch_training_equals_single_process(tmp_path, corpus, torch_reference, world, ep):
    config = write_config(tmp_path / "c.yaml", corpus, "torch", tmp_path / "run", parallel={"expert_parallel": ep})
    train_launched(world, tmp_path / "logs", "--config", str(config))
    shards = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_00000006.*"))
    assert len(shards) == 1 + (ep if ep > 1 else 0), shards
    assert_same_weights(final_model(tmp_path / "run"), torch_reference)


def val_losses(run_dir: Path) -> dict:
    return {r["step"]: r["val_loss"] for r in read_records(Path(run_dir) / "metrics.jsonl") if r["kind"] == "val"}


def test_validation_in_a_multi_process_run_equals_single_process(tmp_path, corpus, torch_reference_dir):
    """Every rank evaluates its rows of the validation batches; the mean over ranks is the
    single process's validation loss (steps 0, 3 and 6). With the distributed optimizer at EP
    2 x DP 2 (moments of replicated parameters sharded over 4 ranks, of experts over 2), the
    weights end on the single process's."""
    config = write_config(tmp_path / "c.yaml", corpus, "torch", tmp_path / "run", parallel={"expert_parallel": 2},
                          train={"distributed_optimizer": True})
    train_launched(4, tmp_path / "logs", "--config", str(config))
    assert_same_weights(final_model(tmp_path / "run"), final_model(torch_reference_dir))
    multi, single = val_losses(tmp_path / "run"), val_losses(torch_reference_dir)
    assert sorted(multi) == sorted(single) == [0, 3, 6]
    for step in single:
        np.testing.assert_allclose(multi[step], single[step], rtol=RTOL, err_msg=f"val_loss at step {step}")


def test_clipping_was_active(torch_reference_dir):
    norms = [r["grad_norm"] for r in read_records(torch_reference_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert norms and min(norms) > 2 * CLIP["grad_clip"]


@pytest.fixture(scope="module")
def mindspore_reference(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("mindspore_single")
    train_single(write_config(root / "c.yaml", corpus, "mindspore", root / "run", train={"steps": 4}))
    return final_model(root / "run")


@pytest.mark.parametrize("ep", [2, 1], ids=["ep2-pynative", "dp2-compiled-distributed-optimizer"])
def test_mindspore_training_equals_single_process(tmp_path, corpus, mindspore_reference, ep):
    """EP=2 runs the forward and backward uncompiled; data parallelism alone keeps them
    compiled (GRAPH_MODE) with the gradient reduce-scatter (AllReduce and a slice on mccl)
    and the distributed optimizer's sharded AdamW between the compiled functions."""
    config = write_config(tmp_path / "c.yaml", corpus, "mindspore", tmp_path / "run",
                          train={"steps": 4, "distributed_optimizer": ep == 1}, parallel={"expert_parallel": ep})
    train_launched(2, tmp_path / "logs", "--config", str(config))
    started = (tmp_path / "run" / "logs" / "rank0.log").read_text()
    assert ("GRAPH_MODE," if ep == 1 else "PyNative, forward and backward uncompiled") in started, started[:500]
    assert_same_weights(final_model(tmp_path / "run"), mindspore_reference)


def test_checkpoint_at_ep2_resumes_at_ep1_and_ep4(tmp_path, corpus, torch_reference):
    """A 6-step run at EP=2 checkpoints at steps 2, 4, 6; its step-4 checkpoint (main file and
    expert shards) resumes to step 6 at EP=1 (one process) and at EP=4. The run trains with
    the distributed optimizer (moments sharded over 2 ranks, whole in the checkpoint), and so
    does the EP-4 resume (the replicated parameters' moments sharded over 4): the moments
    survive a change of data-parallel size."""
    first = write_config(tmp_path / "c.yaml", corpus, "torch", tmp_path / "ep2", parallel={"expert_parallel": 2},
                         train={"distributed_optimizer": True})
    train_launched(2, tmp_path / "logs2", "--config", str(first))
    for name, launch in (("ep1", None), ("ep4", 4)):
        run = tmp_path / name
        run.mkdir()
        (run / "checkpoints").mkdir()
        for f in (tmp_path / "ep2" / "checkpoints").glob("step_00000004*"):
            (run / "checkpoints" / f.name).write_bytes(f.read_bytes())
        saved = yaml.safe_load((tmp_path / "ep2" / "config.yaml").read_text())
        saved["run_dir"] = str(run)
        saved["parallel"]["expert_parallel"] = launch or 1
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
        if launch is None:
            train_single(run / "config.yaml", "--resume", str(run))
        else:
            train_launched(launch, tmp_path / f"logs_{name}", "--resume", str(run))
        assert_same_weights(final_model(run), torch_reference)


def rank_pid(run_dir: Path, rank: int):
    """The pid of the training process of ``rank`` whose command line names ``run_dir``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "train.py" in cmdline and str(run_dir) in cmdline and (
                f"RANK={rank}".encode() in environ or f"RANK_ID={rank}".encode() in environ):
            return int(proc.name)
    return None


@pytest.mark.parametrize("backend, fault", [("torch", signal.SIGKILL), ("torch", signal.SIGSTOP),
                                            ("mindspore", signal.SIGKILL), ("mindspore", signal.SIGSTOP)],
                         ids=["torch-killed", "torch-stalled", "mindspore-killed", "mindspore-stalled"])
def test_a_lost_rank_ends_the_job_within_the_timeout(tmp_path, corpus, backend, fault):
    """A rank killed (its peers see the connection drop) or stalled (its peers' collective
    times out after parallel.timeout_s: gloo's timeout, MindSpore's MS_CPU_COMM_OP_TIMEOUT)
    mid-training: the job exits non-zero in time, naming the ranks."""
    timeout = 15
    config = write_config(tmp_path / "c.yaml", corpus, backend, tmp_path / "run",
                          parallel={"expert_parallel": 2, "timeout_s": timeout},
                          train={"steps": 100000, "checkpoint_every": 0})
    cmd = ["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", "2", "--log-dir", str(tmp_path / "logs"),
           "--config", str(config), "--set", f"run_dir={tmp_path / 'run'}", "--no-progress"]
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    log = tmp_path / "run" / "logs" / "rank1.log"
    while time.monotonic() < deadline and not (log.is_file() and "steps 0.." in log.read_text()):
        time.sleep(0.5)
    time.sleep(2)  # now inside the training loop
    victim = rank_pid(tmp_path / "run", 1)
    assert victim is not None, "rank 1 was not found running"
    os.kill(victim, fault)
    killed = time.monotonic()
    try:
        output, _ = job.communicate(timeout=timeout + 90)
    except subprocess.TimeoutExpired:
        os.kill(victim, signal.SIGKILL)
        job.kill()
        pytest.fail("the job did not end after a rank was lost")
    finally:
        if fault == signal.SIGSTOP and rank_pid(tmp_path / "run", 1):
            os.kill(victim, signal.SIGKILL)
    assert job.returncode != 0
    assert time.monotonic() - killed < timeout + 60  # + the launcher's grace before it SIGKILLs a stopped rank
    if backend == "torch":  # rank 0's own line, or torchrun's report when its SIGTERM reached rank 0 first
        assert re.search(r"rank:? 1\b|rank\s+: 1 \(local_rank: 1\)", output), output[-2000:]
        assert "rank 0" in output or fault == signal.SIGKILL, output[-2000:]
    elif fault == signal.SIGKILL:  # msrun names the worker by its process and stops the others at once
        assert f"Worker process {victim} exit with exception. Error code: -9" in output, output[-2000:]
    else:  # rank 0's collective gave up after parallel.timeout_s (MS_CPU_COMM_OP_TIMEOUT)
        worker = (tmp_path / "logs" / "worker_0.log").read_text(errors="replace")
        assert f"error: rank 0: a collective failed or timed out (parallel.timeout_s={timeout})" in worker


def test_a_data_build_slower_than_the_collective_timeout(tmp_path):
    """Rank 0 builds the data (here about 6 s: BPE and token caches of a 4 MB corpus) while
    the other ranks wait on a file with parallel.data_timeout_s, not in a collective limited
    by parallel.timeout_s (2 s here): before, rank 1 died with "another rank died or stalled"
    while rank 0 was healthy."""
    (tmp_path / "corpus").mkdir()
    big = write_corpus(tmp_path / "corpus" / "big.txt", sentences=120000)
    config = write_config(tmp_path / "c.yaml", big, "torch", tmp_path / "run",
                          parallel={"expert_parallel": 2, "timeout_s": 2.0}, train={"steps": 2})
    train_launched(2, tmp_path / "logs", "--config", str(config))
    assert "(cached)" in (tmp_path / "run" / "logs" / "rank1.log").read_text()  # rank 1 read rank 0's caches
    assert final_model(tmp_path / "run")


@pytest.mark.parametrize("framework", ["torch", "mindspore"])
def test_the_run_directory_is_shared_and_rank_0_picks_the_checkpoint(tmp_path, framework):
    """One launch, four cases (tests/distributed/run_dir_worker.py). The run directory must be
    shared: a rank whose run_dir is another folder (a node-local disk) stops every rank with
    the same line naming it; a shared one passes. Ranks whose filesystem caches show different
    checkpoints: rank 0 picks (step 4), every rank loads that step although rank 1 sees a newer
    one; a rank that cannot read it stops every rank with one line naming it (before, each rank
    took its own newest, silently)."""
    from tests.distributed.launch import launch
    launch(framework, 2, ROOT / "tests" / "distributed" / "run_dir_worker.py", [framework, str(tmp_path / "out")],
           tmp_path / "logs", timeout=300)
    outcomes = {mode: [(tmp_path / "out" / mode / f"rank{r}.txt").read_text() for r in range(2)]
                for mode in ("shared", "split", "resume_newer", "resume_missing")}
    assert outcomes["shared"] == ["ok", "ok"]
    split = outcomes["split"]
    assert split[0] == split[1], split
    assert split[0].startswith("rank(s) 1 cannot see the files rank 0 (on "), split
    assert "must be on a filesystem every node shares" in split[0] and "\n" not in split[0]
    assert outcomes["resume_newer"] == ["step 4", "step 4"]
    missing = outcomes["resume_missing"]
    assert missing[0] == missing[1] and "\n" not in missing[0], missing
    assert missing[0].startswith("rank(s) 1 cannot read step_00000004.safetensors, the checkpoint rank 0 "
                                 "resumes from (rank 1: unreadable checkpoint"), missing
