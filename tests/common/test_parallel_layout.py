"""Process layout, launcher checks and the expert-parallel regrouping, host side: every
bad layout is one ConfigError line before any collective runs."""
import socket
import subprocess

import numpy as np
import pytest

from core.errors import ConfigError
from core.layout import ParallelLayout
from core.params import ParamSpec, constant_init
from launch.process_groups import check_world, init_process_groups
from parallel.all_to_all import transposed_blocks
from parallel.sharding import local_values
from tests.distributed.launch import ROOT


def test_groups_partition_the_world():
    lay = ParallelLayout(world_size=8, rank=5, expert_parallel=4, local_world_size=4)
    assert lay.ep_groups() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert lay.edp_groups() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert lay.ep_group() == [4, 5, 6, 7] and lay.edp_group() == [1, 5]
    assert lay.ep_rank == 1 and lay.node == 1 and lay.num_nodes == 2
    assert lay.local_experts(16) == (4, 8)
    covered = sorted(r for g in lay.ep_groups() for r in g)
    assert covered == list(range(8))


@pytest.mark.parametrize("world, local, ep, expected", [
    # 2 nodes x 6 ranks, EP 4: the middle EP group straddles the nodes, two ranks on each
    (12, 6, 4, [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9, 10, 11]]),
    # 2 nodes x 3 ranks, EP 2 (data parallel 3): one EP group straddles the nodes
    (6, 3, 2, [[0, 1], [2], [3], [4, 5]]),
    # node-aligned: EP groups over whole nodes, and inside one
    (8, 2, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    (8, 4, 2, [[0, 1], [2, 3], [4, 5], [6, 7]]),
])
def test_every_layout_has_node_groups_for_the_locality_loss(world, local, ep, expected):
    """Node groups (an EP group's ranks on one node) exist on any layout: without them the
    locality loss all-reduced over group None, the whole world (12 ranks summed, divided by 4)."""
    from launch.process_groups import _group_sets
    layouts = [ParallelLayout(world, r, ep, local) for r in range(world)]
    assert layouts[0].ep_node_groups() == expected
    for lay in layouts:
        group = lay.ep_node_group()
        assert lay.rank in group and set(group) <= set(lay.ep_group())
        assert all(r // local == lay.node for r in group)
        kinds = dict(_group_sets(lay, hierarchical=False))
        assert kinds["node"] == expected


def test_a_hierarchical_exchange_still_needs_a_node_aligned_layout():
    from launch.process_groups import _group_sets
    with pytest.raises(ConfigError, match="cover whole nodes of 6 ranks or fit inside one"):
        _group_sets(ParallelLayout(12, 0, 4, 6), hierarchical=True)


def test_batch_rows_cover_the_global_batch_once():
    rows = [ParallelLayout(4, r, 2).batch_rows(12) for r in range(4)]
    assert rows == [(0, 3), (3, 6), (6, 9), (9, 12)]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(world_size=6, rank=0, expert_parallel=4), "parallel.expert_parallel=4 must divide the world size 6"),
    (dict(world_size=4, rank=4, expert_parallel=2), "rank 4 is outside"),
    (dict(world_size=4, rank=0, expert_parallel=1, local_world_size=3), "ranks per node"),
])
def test_bad_layouts_are_one_line(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ParallelLayout(**kwargs)


def test_experts_must_split_evenly_and_batches_too():
    with pytest.raises(ConfigError, match="moe.num_experts=6 must be divisible by parallel.expert_parallel=4"):
        ParallelLayout(4, 0, 4).local_experts(6)
    with pytest.raises(ConfigError, match="train.batch_size=10 must be divisible by the world size 4"):
        ParallelLayout(4, 0, 2).batch_rows(10)


def test_launcher_world_is_checked_before_any_collective(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="parallel.world_size=8 but the launcher started 4"):
        check_world("torch", 2, 8)
    with pytest.raises(ConfigError, match="parallel.expert_parallel=3 must divide the launcher's world size 4"):
        check_world("torch", 3, 0)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ConfigError, match="parallel.expert_parallel=2 needs that many processes"):
        init_process_groups("torch", "cpu", 2, 10.0)
    assert init_process_groups("torch", "cpu", 1, 10.0) is None


def test_transposed_blocks_sorts_received_rows_by_local_expert():
    """Rank 1 of 2 with 2 experts each: sources send [rows for e2, rows for e3]."""
    counts = np.array([[5, 0, 2, 1],    # source 0 sends 2 rows to e2, 1 to e3
                       [0, 3, 0, 4]])   # source 1 sends 0 to e2, 4 to e3
    order = transposed_blocks(counts[:, 2:4])
    # received: [s0 e2, s0 e2, s0 e3, s1 e3 x4] -> by expert: e2 rows 0, 1; e3 rows 2, 3, 4, 5, 6
    np.testing.assert_array_equal(order, [0, 1, 2, 3, 4, 5, 6])
    counts = np.array([[0, 0, 1, 2], [0, 0, 3, 0]])
    # received: [s0 e2, s0 e3, s0 e3, s1 e2 x3] -> e2: 0, 3, 4, 5; e3: 1, 2
    np.testing.assert_array_equal(transposed_blocks(counts[:, 2:4]), [0, 3, 4, 5, 1, 2])
    assert transposed_blocks(np.zeros((2, 4), np.int64)[:, 0:2]).size == 0


def test_only_expert_stacks_are_sliced():
    specs = {"experts.w": ParamSpec((4, 2), constant_init(0.0), expert_sharded=True),
             "router.weight": ParamSpec((2, 4), constant_init(0.0))}
    values = {"experts.w": np.arange(8.0).reshape(4, 2), "router.weight": np.ones((2, 4))}
    local = local_values(values, specs, ep_size=2, ep_rank=1)
    np.testing.assert_array_equal(local["experts.w"], [[4, 5], [6, 7]])
    assert local["router.weight"].shape == (2, 4)


def test_a_busy_master_port_is_one_line():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", "2", "--master-port", str(port),
                                 "--framework", "torch", "--config", "configs/quickstart.yaml"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and f"--master-port {port}" in result.stderr


@pytest.mark.parametrize("nproc, setting, fragment", [
    (3, "parallel.expert_parallel=2", "parallel.expert_parallel=2 must divide the launcher's world size 3"),
    (2, "train.batch_size=5", "train.batch_size=5 must be divisible by the world size 2"),
    (2, "parallel.world_size=4", "parallel.world_size=4 but the launcher started 2"),
])
def test_the_launcher_refuses_a_bad_world_before_starting(nproc, setting, fragment):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "run_cpu.sh"), "-n", str(nproc), "--config",
                             "configs/quickstart.yaml", "--set", setting], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and fragment in result.stderr, result.stderr
