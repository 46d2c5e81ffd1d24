"""Pure helpers of scripts/sim_cluster.py (scripts/cluster_sim/): byte accounting, shares,
option parsing, tables."""
import pytest

from parallel.traffic import ELEMENT_BYTES
from scripts.cluster_sim.accounting import a2a_cross_bytes, kept_share, ring_allreduce_cross_bytes, ring_cross_edges
from scripts.cluster_sim.options import parse_ints, parse_list
from scripts.cluster_sim.outcome import Failure, RunResult
from scripts.cluster_sim.report import aggregate, markdown, text_table


def test_ring_edges_and_allreduce_bytes():
    assert ring_cross_edges(4, 2) == 2  # 0-1 | 1->2 | 2-3 | 3->0
    assert ring_cross_edges(4, 4) == 0
    assert ring_cross_edges(4, 1) == 4
    assert ring_allreduce_cross_bytes(1000.0, 4, 2) == pytest.approx(2 * 0.75 * 1000 * 2)


def test_a2a_bytes_weight_each_record_by_its_interval():
    records = [{"step": 5, "a2a_cross_node_rows": 999.0}, {"step": 10, "a2a_cross_node_rows": 100.0},
               {"step": 12, "a2a_cross_node_rows": 50.0}]
    # steps 6..10 at 100 rows per rank, 11..12 at 50; 4 ranks, d=8, float32, forward + backward
    assert a2a_cross_bytes(records, 5, 8, ELEMENT_BYTES["float32"], 4) == (5 * 100 + 2 * 50) * 4 * 8 * 4 * 2


def test_kept_share():
    assert kept_share({"own_node_share": 0.7, "a2a_cross_node_rows": 1.0}, False, 512, 1, 2) == 0.7
    assert kept_share({"a2a_cross_node_rows": 512.0}, True, 512, 1, 2) == pytest.approx(0.75)
    assert kept_share({"a2a_cross_node_rows": 512.0}, False, 512, 1, 2) is None


def test_parse_options_are_one_line_errors():
    assert parse_list("switch, hash", ("switch", "hash"), "--routers") == ["switch", "hash"]
    assert parse_ints("50,200", "--mbit", 1) == [50, 200]
    for bad in ("", "topk", "switch,topk"):
        with pytest.raises(Failure, match="--routers"):
            parse_list(bad, ("switch", "hash"), "--routers")
    for bad in ("", "x", "0"):
        with pytest.raises(Failure, match="--mbit"):
            parse_ints(bad, "--mbit", 1)


def test_aggregate_and_tables():
    runs = [RunResult("torch", "switch", "flat", 200, seed, 9, step, 18e6, 5e6, 12e6, None, loss)
            for seed, step, loss in ((0, 0.5, 6.0), (1, 0.7, 6.2))]
    [row] = aggregate(runs)
    assert row["seeds"] == 2 and row["step_s"] == pytest.approx(0.6) and row["link_mb"] == pytest.approx(18.0)
    assert row["kept_on_node"] is None
    text, table = text_table([row]), markdown([row])
    assert "0.600 ± 0.141" in text and "n/a" in text
    assert table.count("\n") == 2 and "| torch | switch | flat | 200 | 2 |" in table
