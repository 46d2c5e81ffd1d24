"""Checkpoint files: round trip, keep-last-K, and atomicity (a writer that dies midway,
by an exception or by SIGKILL, leaves the earlier checkpoints loadable)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import training.checkpoint as ckpt
from core.errors import ConfigError
from training.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def make(step: int, size: int = 6) -> Checkpoint:
    rng = np.random.default_rng(step)
    return Checkpoint(step=step,
                      model={"model.embed_tokens.weight": rng.standard_normal((size, 4)).astype(np.float32)},
                      optimizer={"step": np.asarray(step, np.int64),
                                 "exp_avg.model.embed_tokens.weight": rng.standard_normal((size, 4)).astype(np.float32)},
                      rng={"framework": rng.integers(0, 255, 16).astype(np.uint8)},
                      state={"data": {"epoch": 1, "index": step, "seed": 0, "dataset": "abc"}, "skipped": 2},
                      backend="torch", dtype="float32")


def assert_same(a: Checkpoint, b: Checkpoint) -> None:
    assert (a.step, a.state, a.backend, a.dtype) == (b.step, b.state, b.backend, b.dtype)
    for group in ("model", "optimizer", "rng"):
        x, y = getattr(a, group), getattr(b, group)
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name])
            assert x[name].dtype == y[name].dtype


def test_round_trip_and_keep_last(tmp_path):
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path, make(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006.safetensors", "step_00000008.safetensors"]
    assert_same(load_checkpoint(latest_checkpoint(tmp_path)), make(8))


def test_exception_in_the_writer_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, make(2), keep=3)

    def dies_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # a partial file, then the writer fails
            handle.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, make(4), keep=3)
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000002.safetensors"]  # no partial file left
    assert_same(load_checkpoint(latest_checkpoint(tmp_path)), make(2))


WRITER = """
import sys
sys.path.insert(0, {root!r})
from tests.common.test_checkpoint import make
from training.checkpoint import save_checkpoint
print("ready", flush=True)
step = 4
while True:
    save_checkpoint({directory!r}, make(step, size=400_000), keep=100)
    step += 2
"""


def test_killed_writer_leaves_every_listed_checkpoint_loadable(tmp_path):
    save_checkpoint(tmp_path, make(2), keep=100)
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), directory=str(tmp_path)))
    writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while not list(tmp_path.glob(".step_*.tmp*")) and time.time() < deadline:
            time.sleep(0.001)  # wait until a write is in progress
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    found = list_checkpoints(tmp_path)
    assert found and found[0].name == "step_00000002.safetensors"
    for path in found:
        assert load_checkpoint(path).step == int(path.stem.split("_")[1])
    save_checkpoint(tmp_path, make(1000), keep=100)  # the next save clears the stray temporary file
    assert not list(tmp_path.glob(".step_*.tmp*"))


def test_damaged_or_foreign_file_is_one_line_error(tmp_path):
    path = save_checkpoint(tmp_path, make(2), keep=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="unreadable checkpoint"):
        load_checkpoint(path)
    from safetensors.numpy import save_file
    other = tmp_path / "step_00000004.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(ConfigError, match="not a checkpoint of this library"):
        load_checkpoint(other)


def test_scalars_keep_their_shape(tmp_path):
    path = save_checkpoint(tmp_path, make(2), keep=1)
    assert load_checkpoint(path).optimizer["step"].shape == ()


def sharded(directory: Path, step: int, seed: int = 0) -> Path:
    """A checkpoint whose expert stack (4 experts) is in two shards of 2, as an EP-2 run writes it."""
    rng = np.random.default_rng(seed)
    stack = rng.standard_normal((4, 3)).astype(np.float32)
    for i in range(2):
        shard = Checkpoint(step=step, model={"experts.w": stack[2 * i:2 * i + 2]}, optimizer={}, rng={})
        ckpt.save_expert_shard(directory, shard, i, 2, (2 * i, 2 * i + 2, 4))
    main = Checkpoint(step=step, model={"router.w": rng.standard_normal(3).astype(np.float32)}, optimizer={},
                      rng={}, state={"seed": seed})
    return save_checkpoint(directory, main, keep=5, expert_shards=2)


def test_sharded_checkpoint_loads_whole(tmp_path):
    path = sharded(tmp_path, 4)
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.model["experts.w"],
                                  np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))


def test_swapped_shards_are_refused_in_one_line(tmp_path):
    """Renaming experts0of2 <-> experts1of2 loaded silently, expert 0 holding expert 2."""
    path = sharded(tmp_path, 4)
    a, b = ckpt.shard_path(tmp_path, 4, 0, 2), ckpt.shard_path(tmp_path, 4, 1, 2)
    a.rename(tmp_path / "tmp")
    b.rename(a)
    (tmp_path / "tmp").rename(b)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message
    assert "step_00000004.experts0of2.safetensors holds shard 1 of 2 (experts 2..3 of 4), not shard 0 of 2" in message


def test_a_shard_from_another_run_with_the_same_step_is_refused(tmp_path):
    path = sharded(tmp_path / "mine", 4, seed=0)
    sharded(tmp_path / "other", 4, seed=1)
    foreign = ckpt.shard_path(tmp_path / "other", 4, 1, 2)
    ckpt.shard_path(tmp_path / "mine", 4, 1, 2).write_bytes(foreign.read_bytes())
    with pytest.raises(ConfigError, match=r"experts1of2\.safetensors is not the shard written with this checkpoint "
                                          r"\(checksum [0-9a-f]{8}, step 4; recorded [0-9a-f]{8}, step 4\)"):
        load_checkpoint(path)


def test_a_missing_shard_is_named(tmp_path):
    path = sharded(tmp_path, 4)
    ckpt.shard_path(tmp_path, 4, 1, 2).unlink()
    with pytest.raises(ConfigError, match=r"step_00000004\.safetensors: expert shard step_00000004\.experts1of2"
                                          r"\.safetensors unreadable"):
        load_checkpoint(path)


@pytest.mark.parametrize("experts, shards_read", [((0, 2, 4), [0]), ((2, 4, 4), [1]), ((1, 3, 4), [0, 1]),
                                                  ((0, 1, 4), [0]), ((0, 4, 4), [0, 1])])
def test_a_rank_reads_only_the_shards_of_its_experts(tmp_path, monkeypatch, experts, shards_read):
    """Memory on a node: each rank loads its experts only (at any expert-parallel size)."""
    path = sharded(tmp_path, 4)
    read = []
    original = ckpt._load_shard
    monkeypatch.setattr(ckpt, "_load_shard", lambda main, step, i, n, record: read.append(i) or
                        original(main, step, i, n, record))
    loaded = load_checkpoint(path, experts)
    full = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    assert read == shards_read and loaded.experts == experts[:2]
    np.testing.assert_array_equal(loaded.model["experts.w"], full[experts[0]:experts[1]])
    assert load_checkpoint(path, (0, 4, 8)).experts is None  # another expert count: loads whole
