"""parallel/traffic.py on hand-computed cases: the rows one exchange sends (flat and
hierarchical) and the bytes of a step that the trainer logs and the benchmarks report."""
import numpy as np

from core.layout import Hierarchy
from parallel.traffic import ELEMENT_BYTES, messages, step_bytes, traffic, traffic_bytes

COUNTS = np.arange(1, 17).reshape(4, 4)  # rows source -> destination; 2 nodes of 2 ranks


def test_flat_exchange_counts_rows_to_other_ranks_and_nodes():
    assert traffic(COUNTS, 0, (0, 0, 1, 1)) == (2 + 3 + 4, 3 + 4)
    assert traffic(COUNTS, 0, (0, 0, 0, 0)) == (9, 0)


def test_hierarchical_exchange_forwards_along_the_rail():
    hierarchy = Hierarchy(ranks_per_node=2, node_group=None, rail_group=None)
    # phase A: rank 0 hands local rank 1 the rows for (0, 1) and (1, 1): 2 + 4; phase B: rail 0
    # carries node 0's rows for (1, 0) from ranks 0 and 1: 3 + 7
    assert traffic(COUNTS, 0, (0, 0, 1, 1), hierarchy) == (6 + 10, 10)


def test_step_bytes_count_forward_and_backward_on_every_rank():
    assert step_bytes(3.0, d_model=8, element_bytes=ELEMENT_BYTES["bfloat16"], world=4) == 3 * 2 * 8 * 2 * 4


def test_traffic_bytes_split_inside_and_across_nodes():
    metrics = {"a2a_sent_rows": np.float32(3.0), "a2a_cross_node_rows": np.float32(1.0)}
    assert traffic_bytes(metrics, 8, 2, 4) == {"a2a_bytes_inside_nodes": 256.0, "a2a_bytes_across_nodes": 128.0}
    assert traffic_bytes({"loss": np.float32(1.0)}, 8, 2, 4) == {}


def test_messages_per_exchange_flat_and_hierarchical():
    # 2 nodes x 2 ranks: flat 4 x 3 pairs, 4 x 2 of them across; hierarchical 4 x 1 inside + 4 x 1 rails
    assert messages(2, 2, hierarchical=False) == (12, 8)
    assert messages(2, 2, hierarchical=True) == (8, 4)
    # 8 nodes x 8 NPUs: flat 64 x 63 = 4032 (3584 across); hierarchical 64 x 7 + 64 x 7 = 896 (448 across)
    assert messages(8, 8, False) == (4032, 3584) and messages(8, 8, True) == (896, 448)
