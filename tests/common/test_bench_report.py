"""bench_layer's verdicts on synthetic timings: the same-round ratio, the per-size targets
and the expert sweep's drift correction by the dense reference of each process."""
from scripts.bench.report import expert_targets, markdown, point_targets, ratio
from scripts.bench.torch_cases import DENSE


def row(name, group, dispatch, times, process):
    times = list(times)
    return {"name": name, "group": group, "dispatch": dispatch, "times_ms": times, "process": process,
            "median_ms": sorted(times)[len(times) // 2], "vs_dense": None, "note": "", "error": ""}


def point(tokens, experts, dense_ms, ours_ms, peer_ms=None):
    rows = [row(DENSE, "torch", "dense", [dense_ms] * 3, "torch"),
            row("ours torch dropless", "torch", "dropless", [ours_ms] * 3, "torch")]
    if peer_ms is not None:
        rows.append(row("deepspeed MoE dropless", "peers", "dropless", [peer_ms] * 3, "torch"))
    for r in rows:
        r["vs_dense"] = ratio(r, rows[0])
    return {"settings": {"tokens": tokens, "num_experts": experts}, "rows": rows}


def test_ratio_uses_per_round_ratios_within_a_process():
    a = row("a", "torch", "dropless", [10, 20, 40], "torch")
    b = row("b", "torch", "dense", [10, 10, 40], "torch")
    assert ratio(a, b) == 1.0  # per round 1, 2, 1 -> median 1 (medians alone would say 2)
    b["process"] = "ms-graph"
    assert ratio(a, b) == 2.0


def test_point_targets_name_the_faster_peer():
    lines = point_targets(point(1024, 8, 100.0, 105.0, peer_ms=100.0)["rows"])
    assert lines[0].endswith("1.050x -> met")
    assert "NOT met (deepspeed MoE dropless)" in lines[1]


def test_expert_sweep_divides_out_each_process_drift():
    # the 16-expert process ran twice as slow throughout: same ratio to its dense -> 1.00x
    points = [point(4096, 8, 100.0, 120.0), point(4096, 16, 200.0, 240.0), point(4096, 32, 100.0, 160.0)]
    (line,) = expert_targets(points)
    assert "16: 1.00x" in line and "32: 1.33x" in line and line.endswith("NOT met")
    assert markdown({"points": points}).count("\n") == 4
