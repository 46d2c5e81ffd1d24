"""Data placed by node (data.node_domains): each node's block of the global batch holds only its
domains, in one process and in each rank's rows; per-domain validation; one-line errors."""
import numpy as np
import pytest

from core.errors import ConfigError
from core.layout import ParallelLayout
from tests.support.small_text import small_data, write_user_jsonl
from training.config import config_from_dict
from training.data.node_placement import NodePlacement, check_rre_placement, placed_nodes, streams
from training.data.pipeline import build_data

# two corpora and one mixed file (domains code and notes): 4 domains on 2 nodes
PLACED = [["bible", "code"], ["shakespeare", "notes"]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("placed")
    return build_data(small_data(folder / "cache", files=[str(write_user_jsonl(folder))], seq_len=8), seed=0)


def test_each_node_block_and_each_rank_read_only_their_domains(data):
    placed, placement, batches, val_sets = streams(data, PLACED, 8, 2, launcher_nodes=None, topology_nodes=2)
    assert placed.domain_names == ["bible", "code", "shakespeare", "notes"]  # renumbered in node order
    layouts = [ParallelLayout(world_size=4, rank=r, expert_parallel=4, local_world_size=2) for r in range(4)]
    seen = [set() for _ in layouts]
    first = next(batches)
    for tokens, domains in [first] + [next(batches) for _ in range(20)]:
        assert tokens.shape == (8, 9) and domains.shape == (8, 8)
        for lay in layouts:
            start, end = lay.batch_rows(8)
            seen[lay.rank].update(np.unique(domains[start:end]).tolist())
    assert seen == [{0, 1}, {0, 1}, {2, 3}, {2, 3}]  # every domain of the node, nothing of the other
    state = batches.state_dict()
    following = next(batches)
    _, _, again, _ = streams(data, PLACED, 8, 2, None, 2)
    again.load_state_dict(state)
    np.testing.assert_array_equal(next(again)[0], following[0])
    assert sorted(val_sets) == ["bible", "code", "notes", "shakespeare"]
    for name, sets in val_sets.items():
        assert len(sets) == 2 and all((d == placed.domain_names.index(name)).all() for _, d in sets)


def test_the_same_data_control_gives_each_node_its_own_stream(data):
    everything = ["shakespeare", "bible", "code", "notes"]
    _, _, batches, _ = streams(data, [everything, everything], 8, 1, None, None)
    tokens, _ = next(batches)
    assert {tuple(r) for r in tokens[:4]} != {tuple(r) for r in tokens[4:]}


def test_without_placement_the_one_stream_and_one_validation_set(data):
    same, placement, batches, val_sets = streams(data, [], 8, 2, None, None)
    assert same is data and placement is None and list(val_sets) == [""]
    np.testing.assert_array_equal(next(batches)[0], next(data.train_batches(8))[0])


@pytest.mark.parametrize("node_domains, launcher, topology, batch, message", [
    ([["bible"], ["poems"]], None, None, 8, "data.node_domains[1]: unknown domain 'poems'"),
    ([["bible", "code"], ["shakespeare"]], None, None, 8, "domain(s) notes of the data are on no node"),
    (PLACED, 4, None, 8, "lists 2 node(s) but the launcher started 4 node(s)"),
    (PLACED, None, 4, 8, "moe.router_options.topology.nodes=4"),
    (PLACED, None, None, 7, "train.batch_size=7 must be divisible by the 2 nodes"),
], ids=["unknown", "unplaced", "launcher", "topology", "batch"])
def test_one_line_errors(data, node_domains, launcher, topology, batch, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")) as error:
        streams(data, node_domains, batch, 1, launcher, topology)
    assert "\n" not in str(error.value)


def rre(num_domains: int, by_node: bool = True):
    raw = {"data": {"corpora": ["shakespeare"]}, "moe": {"router": "rre", "num_experts": 8, "top_k": 1,
                                                         "router_options": {"num_domains": num_domains, "vocab_size": 4096,
                                                                            "domains_by_node": by_node}}}
    return config_from_dict(raw).moe


def test_rre_domain_placement_is_checked_against_the_nodes(data):
    placement = NodePlacement(data, PLACED)
    check_rre_placement(rre(4), placement)  # groups 0, 1 on node 0 (bible, code); 2, 3 on node 1
    check_rre_placement(rre(4, by_node=False), None)
    with pytest.raises(ConfigError, match="domains_by_node: needs data.node_domains"):
        check_rre_placement(rre(4), None)
    with pytest.raises(ConfigError, match="num_domains=2 must equal the data's 4 domains"):
        check_rre_placement(rre(2), placement)
    shared = NodePlacement(data, [["bible", "code", "shakespeare"], ["shakespeare", "notes"]])
    with pytest.raises(ConfigError, match=r"domain shakespeare is read on node\(s\) \[0, 1\]"):
        check_rre_placement(rre(4), shared)


def test_placed_nodes_default_to_the_list():
    assert placed_nodes([["a"], ["b"], ["c"]], None, None) == 3
