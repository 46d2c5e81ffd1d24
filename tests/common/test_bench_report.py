"""scripts/bench_layer.py's framework-free parts: argument handling, the ratios and output
differences it derives from timed rows, and the target verdicts it prints."""
import numpy as np
import pytest

from scripts.bench_layer import DENSE, add_comparisons, parse_args, targets


def row(name, group, dispatch, median, y=None, compare_to=None, times=None, process="torch"):
    return {"name": name, "group": group, "dispatch": dispatch, "median_ms": median, "min_ms": median,
            "note": "", "error": "", "y": y, "compare_to": compare_to, "process": process,
            "times_ms": times or [median] * 3}


def test_quick_sizes_fill_only_what_is_not_given():
    args = parse_args(["--quick", "--tokens", "512"])
    assert (args.d_model, args.ffn_hidden, args.tokens) == (128, 512, 512)
    full = parse_args([])
    assert (full.d_model, full.ffn_hidden, full.tokens, full.num_experts, full.top_k) == (512, 2048, 4096, 8, 2)


@pytest.mark.parametrize("argv", [["--peers", "tutel"], ["--backends", "jax"], ["--tokens", "0"]])
def test_bad_arguments_are_rejected(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_none_selects_no_peers_and_no_backends():
    args = parse_args(["--peers", "none", "--backends", "none"])
    assert args.peers == [] and args.backends == []


def test_ratios_and_relative_output_difference():
    y = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
    shifted = y.copy()
    shifted[1, 1] += 0.04
    rows = [row(DENSE, "torch", "dense", 200.0), row("ours torch dropless", "torch", "dropless", 210.0, y=y),
            row("peer", "peers", "dropless", 300.0, y=shifted, compare_to="ours torch dropless"),
            row("other shape", "peers", "dropless", 300.0, y=y[:1], compare_to="ours torch dropless")]
    add_comparisons(rows)
    assert rows[1]["vs_dense"] == pytest.approx(1.05)
    assert rows[2]["vs_dense"] == pytest.approx(1.5)
    assert rows[2]["rel_diff"] == pytest.approx(0.01, rel=1e-4)  # 0.04 / max|y| = 4
    assert rows[1]["rel_diff"] is None and rows[3]["rel_diff"] is None


def test_target_verdicts_follow_the_numbers():
    rows = [row(DENSE, "torch", "dense", 100.0), row("ours torch dropless", "torch", "dropless", 108.0),
            row("fast peer", "peers", "dropless", 90.0), row("slow peer", "peers", "capacity", 400.0),
            row("ours dropless ms-graph", "ms-graph", "dropless", 150.0, process="ms-graph")]
    add_comparisons(rows)
    lines = targets(rows)
    assert lines[0].endswith("1.080x -> met")
    assert "NOT met (fast peer)" in lines[1]
    assert lines[2] == "ms-graph dropless within 1.3x of torch: 1.389x -> NOT met"
    rows[0]["median_ms"], rows[0]["times_ms"] = 90.0, [90.0] * 3
    add_comparisons(rows)
    assert targets(rows)[0].endswith("1.200x -> NOT met")


def test_ratios_pair_rounds_within_a_process_and_medians_across():
    """Drift: the dense round times swing 4x; per round ours is 1.10, 1.00, 1.05 of dense."""
    rows = [row(DENSE, "torch", "dense", 200.0, times=[100.0, 200.0, 400.0]),
            row("ours torch dropless", "torch", "dropless", 200.0, times=[110.0, 200.0, 420.0]),
            row("ours dropless ms-graph", "ms-graph", "dropless", 300.0, times=[290.0, 300.0, 310.0],
                process="ms-graph")]
    add_comparisons(rows)
    assert rows[1]["vs_dense"] == pytest.approx(1.05)
    assert rows[2]["vs_dense"] == pytest.approx(1.5)
    assert targets(rows)[-1] == "ms-graph dropless within 1.3x of torch: 1.500x -> NOT met"
