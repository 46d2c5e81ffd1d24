"""Topology: expert placement, virtual token chunks, and one-line errors naming the setting."""
import numpy as np
import pytest

from core.errors import ConfigError
from core.topology import Topology


def test_experts_are_contiguous_per_node_and_device():
    t = Topology.from_config({"nodes": 2, "devices_per_node": 2}, num_experts=8)
    assert t.num_devices == 4 and t.experts_per_node == 4 and t.experts_per_device == 2
    np.testing.assert_array_equal(t.expert_nodes(), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(t.expert_devices(), [0, 0, 1, 1, 2, 2, 3, 3])
    assert t.node_experts(1) == (4, 8)


def test_tokens_split_into_contiguous_device_chunks():
    t = Topology.from_config({"nodes": 2, "devices_per_node": 2}, num_experts=4)
    assert t.device_token_ranges(10) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert t.node_token_ranges(10) == [(0, 5), (5, 10)]
    np.testing.assert_array_equal(t.token_nodes(10), [0] * 5 + [1] * 5)
    covered = np.concatenate([np.arange(s, e) for s, e in t.device_token_ranges(13)])
    np.testing.assert_array_equal(covered, np.arange(13))


def test_fewer_tokens_than_devices_leaves_empty_chunks():
    t = Topology.from_config({"nodes": 4}, num_experts=4)
    ranges = t.device_token_ranges(2)
    assert sum(e - s for s, e in ranges) == 2 and any(e == s for s, e in ranges)


@pytest.mark.parametrize("raw, experts, message", [
    ({"nodes": 3}, 8, r"topology\.nodes=3: moe\.num_experts=8 must divide evenly over the nodes"),
    ({"nodes": 2, "devices_per_node": 3}, 8, r"topology\.devices_per_node=3"),
    ({"nodes": 0}, 8, r"topology\.nodes=0: must be a positive integer"),
    ({"nodes": True}, 8, r"topology\.nodes=True"),
    ({"devices_per_node": 2}, 8, r"topology\.nodes is missing"),
    ({"nodes": 2, "gpus": 2}, 8, r"topology\.gpus is not a topology setting"),
    ([2, 2], 8, r"topology must be a mapping"),
])
def test_bad_topologies_raise_one_line_errors(raw, experts, message):
    with pytest.raises(ConfigError, match=message) as error:
        Topology.from_config(raw, experts)
    assert "\n" not in str(error.value)
