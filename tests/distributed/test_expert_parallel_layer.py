"""The expert-parallel MoE layer on real multi-process runs (torch.distributed with gloo
via torchrun; MindSpore communication via msrun with the CPU all-to-all stand-in) equals
the single-process layer on the same weights and global batch: outputs, input gradients,
expert gradients (the shard of each rank), replicated gradients (summed over ranks) and
router losses. Capacity modes equal a single-process run on each rank's own tokens
(capacity per source rank). Cases with idle experts and a rank that sends nothing are
included, and so are DeepSeek-V3's routing (sigmoid, score-correction bias, group-limited
choice, routed scaling, an ungated shared expert) and gpt-oss's router bias. One launch per
(framework, layout) runs every case (tests/distributed/layer_worker.py); a hierarchical launch
runs them with both exchanges. The MindSpore launch also runs the cases with fixed buffers
compiled (GRAPH_MODE: the exchange inside the compiled graph) against the same single-process
references and against its own PyNative run."""
from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.launch import ROOT, launch, launch_nodes, rank_files

WORKER = ROOT / "tests" / "distributed" / "layer_worker.py"
RTOL, ATOL = 1e-4, 1e-5
# (framework, nodes, ranks per node, EP size, all-to-all); two "nodes" are two launchers on loopback;
# a hierarchical launch also writes the flat exchange's results
# 2 x 3 ranks at EP 2 is not aligned to nodes (an EP group straddles them) and has data parallel 3
LAUNCHES = [("torch", 1, 2, 2, "flat"), ("torch", 1, 4, 4, "flat"), ("torch", 1, 4, 2, "flat"),
            ("torch", 2, 2, 4, "hierarchical"), ("torch", 2, 3, 2, "flat"), ("mindspore", 2, 2, 4, "hierarchical")]
RESULTS = [(launch, exchange) for launch in LAUNCHES
           for exchange in (("flat", "hierarchical") if launch[4] == "hierarchical" else ("flat",))
           + (("compiled",) if launch[0] == "mindspore" else ())]
_launched = {}


def launched(launch_spec, tmp_path_factory):
    """The output folder of one launch, started on first use."""
    if launch_spec not in _launched:
        framework, nodes, per_node, ep, all_to_all = launch_spec
        out = tmp_path_factory.mktemp(f"{framework}{nodes}{per_node}{ep}{all_to_all}")
        args = [framework, str(out), str(ep), all_to_all]
        if nodes == 1:
            launch(framework, per_node, WORKER, args, out / "logs")
        else:
            launch_nodes(framework, nodes, per_node, WORKER, args, out / "logs")
        _launched[launch_spec] = out
    return _launched[launch_spec]


@pytest.fixture(scope="module", params=RESULTS, ids=lambda p: f"{p[0][0]}-{p[0][1]}x{p[0][2]}-ep{p[0][3]}-{p[1]}")
def ranks(request, tmp_path_factory):
    launch_spec, exchange = request.param
    _, nodes, per_node, _, _ = launch_spec
    return rank_files(launched(launch_spec, tmp_path_factory) / exchange, nodes * per_node)


def case_names(rank: dict):
    return sorted({key.split(".")[0] for key in rank if key.endswith(".y") and not key.startswith("ref.")})


def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=what)


def reference_ranks(ranks, name: str, r: int):
    """The ranks whose tokens the reference of case ``name`` on rank ``r`` ran on, in order:
    all (``global``), rank r's EP group (``ep_group``), or rank r alone (``per_rank``)."""
    kind, ep = str(ranks[r][f"{name}.reference"]), int(ranks[r]["ep"])
    if kind == "global":
        return list(range(len(ranks)))
    if kind == "ep_group":
        return list(range(r - r % ep, r - r % ep + ep))
    return [r]


def test_outputs_and_input_gradients_equal_single_process(ranks):
    for name in case_names(ranks[0]):
        for r, rank in enumerate(ranks):
            ref_y, ref_dx = rank[f"ref.{name}.y"], rank[f"ref.{name}.grad_x"]
            group = reference_ranks(ranks, name, r)
            if len(group) > 1:
                tokens, at = ref_y.shape[0] // len(group), group.index(r)
                ref_y, ref_dx = ref_y[at * tokens:(at + 1) * tokens], ref_dx[at * tokens:(at + 1) * tokens]
                close(rank[f"{name}.grad_x"], ref_dx, f"{name} rank {r} grad_x")
            close(rank[f"{name}.y"], ref_y, f"{name} rank {r} y")


def test_weight_gradients_and_router_loss_equal_single_process(ranks):
    """Expert shards: summed over the replicas of the same experts (EDP) that ran on the
    reference's tokens, equal to the reference's rows; replicated weights: summed over
    those ranks."""
    ep = int(ranks[0]["ep"])
    for name in case_names(ranks[0]):
        if str(ranks[0][f"{name}.reference"]) == "per_rank":
            continue
        groups = sorted({tuple(reference_ranks(ranks, name, r)) for r in range(len(ranks))})
        for group in groups:
            ref = ranks[group[0]]
            members = [ranks[r] for r in group]
            close(np.mean([rank[f"{name}.aux_loss"] for rank in members]), ref[f"ref.{name}.aux_loss"] / len(group),
                  f"{name} router loss of ranks {group}")
            for key in [k for k in ref if k.startswith(f"{name}.grad.")]:
                param = key[len(f"{name}.grad."):]
                full = ref[f"ref.{name}.grad.{param}"]
                if param.startswith("experts."):
                    per_rank = full.shape[0] // ep
                    for j in range(ep):
                        summed = sum(ranks[r][key] for r in group if r % ep == j)
                        close(summed, full[j * per_rank:(j + 1) * per_rank], f"{name} {param} experts of EP rank {j}")
                else:
                    close(sum(rank[key] for rank in members), full, f"{name} {param} of ranks {group}")


def test_locmoe_on_the_real_topology_equals_virtual_nodes(ranks):
    """LocMoE reads the launcher's placement: its locality loss (in the router loss and
    gradients above), capacity per source device and own-node share equal the single-process
    run with the same placement as virtual nodes; with data parallelism, each EP group's
    (on a layout not aligned to nodes, EP groups differ in placement), its node reduction
    staying inside the group's ranks on the node."""
    names = [n for n in case_names(ranks[0]) if n.startswith("locmoe")]
    assert names
    for name in names:
        for group in sorted({tuple(reference_ranks(ranks, name, r)) for r in range(len(ranks))}):
            share = np.mean([ranks[r][f"{name}.own_node_share"] for r in group])
            close(share, ranks[group[0]][f"ref.{name}.own_node_share"], f"{name} own_node_share of ranks {group}")


def test_edge_cases_do_what_they_claim(ranks):
    """idle_experts: only experts 0 and 1 get tokens; silent_rank: rank 0 sends nothing;
    shared_expert: its replicated weights (and gate) have gradients on every rank (the
    compiled set has only the fixed-buffer cases)."""
    if "idle_experts.y" not in ranks[0]:
        assert str(ranks[0]["all_to_all"]) == "compiled"
        return
    for rank in ranks:
        assert rank["idle_experts.tokens_per_expert"][2:].sum() == 0
        shared = [key for key in rank if key.startswith("shared_expert.grad.shared_expert")]
        assert len(shared) == 4 and all(np.abs(rank[key]).sum() > 0 for key in shared)
    assert ranks[0]["silent_rank.tokens_per_expert"].sum() == 0
    assert all(rank["silent_rank.tokens_per_expert"].sum() > 0 for rank in ranks[1:])


def test_compiled_layer_equals_pynative(tmp_path_factory):
    """MindSpore: the fixed-buffer cases compiled (GRAPH_MODE) give this rank the outputs,
    gradients and router losses of the same case in PyNative, on the same launch."""
    spec = next(s for s in LAUNCHES if s[0] == "mindspore")
    out = launched(spec, tmp_path_factory)
    world = spec[1] * spec[2]
    pynative, graph = rank_files(out / "flat", world), rank_files(out / "compiled", world)
    shared = sorted(set(case_names(graph[0])) & set(case_names(pynative[0])))
    assert {"capacity", "locmoe_capacity"} <= set(shared)
    for r in range(world):
        for key in [k for k in graph[r] if k.split(".")[0] in shared and not k.endswith((".dispatch", ".reference"))]:
            close(graph[r][key], pynative[r][key], f"compiled vs PyNative: {key} rank {r}")


def test_capacity_is_never_exceeded(ranks):
    for rank in ranks:
        tokens = rank["capacity.y"].shape[0]
        capacity = int(np.ceil(1.0 * tokens * 2 / 8))
        assert rank["capacity.tokens_per_expert"].max() <= capacity


def test_traffic_counters_equal_the_routing(ranks):
    """The counters equal a host-side count from every rank's routing (tokens per expert):
    dropless EP sends each cross-rank assignment there and back; flat sends nothing more (no
    padding) and crosses nodes exactly with the rows of other nodes' ranks; hierarchical
    forwards rows inside nodes first, so it sends more rows in all but, over the ranks, the
    same rows across nodes."""
    ep, per_node = int(ranks[0]["ep"]), int(ranks[0]["ranks_per_node"])
    hierarchical = str(ranks[0]["all_to_all"]) == "hierarchical"
    if ep == 1:
        return
    for name in case_names(ranks[0]):
        if str(ranks[0][f"{name}.dispatch"]) != "dropless":
            continue
        loads = [rank[f"{name}.tokens_per_expert"] for rank in ranks]
        per_rank = loads[0].shape[0] // ep

        def rows(s, r):  # rows rank s dispatches to rank r (same EP group)
            return loads[s][(r % ep) * per_rank:(r % ep + 1) * per_rank].sum()

        total_across = 0
        for r, rank in enumerate(ranks):
            group = [s for s in range(len(ranks)) if s // ep == r // ep and s != r]
            needed = sum(rows(r, s) + rows(s, r) for s in group)
            across = sum(rows(r, s) + rows(s, r) for s in group if s // per_node != r // per_node)
            total_across += across
            assert rank[f"{name}.a2a_needed_rows"] == needed, (name, r)
            if hierarchical:
                assert rank[f"{name}.a2a_sent_rows"] >= rank[f"{name}.a2a_cross_node_rows"], (name, r)
            else:
                assert rank[f"{name}.a2a_sent_rows"] == needed, (name, r)
                assert rank[f"{name}.a2a_cross_node_rows"] == across, (name, r)
        assert sum(rank[f"{name}.a2a_cross_node_rows"] for rank in ranks) == total_across, name
