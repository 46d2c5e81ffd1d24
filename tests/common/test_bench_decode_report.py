"""bench_decode's summary on synthetic rounds: ratios are medians of per-round ratios (drift
that hits a round hits both sides), the targets' verdicts, greedy agreement, the table."""
from scripts.bench.decode_report import summarise, table

NAMES = ("transformers", "torch", "mindspore")


def row(ms, tokens):
    return {"prefill_ms": 2 * ms, "ms_per_token": ms, "tokens": list(tokens)}


def one_round(transformers_ms, torch_ms, mindspore_ms, tokens=(1, 2, 3)):
    return {"greedy": {"transformers": row(transformers_ms, (1, 2, 3)), "torch": row(torch_ms, (1, 2, 3)),
                       "mindspore": row(mindspore_ms, tokens)}}


def test_ratios_are_medians_of_per_round_ratios_and_verdicts_follow_the_targets():
    rounds = [one_round(10, 10, 20), one_round(40, 44, 20), one_round(20, 20, 50, tokens=(1, 2, 4))]
    summary = summarise(rounds, NAMES, ["greedy"])
    rows = {row["implementation"]: row for row in summary["rows"]}
    assert rows["torch"]["decode_ratio"] == 1.0  # per round 1.0, 1.1, 1.0 (medians alone: 20 / 20 also 1.0)
    assert rows["mindspore"]["decode_ratio"] == 2.0  # per round 2.0, 0.45, 2.5; medians alone: 20 / 20 = 1.0
    assert rows["mindspore"]["reference"] == "torch" and "reference" not in rows["transformers"]
    assert summary["targets"] == ["torch greedy decode / transformers: 1.00x (target <= 1.1x): met",
                                  "mindspore greedy decode / torch: 2.00x (target <= 1.5x): NOT met"]
    assert summary["greedy_tokens_agree"] == {"torch": True, "mindspore": True}  # the first round's tokens
    lines = table(summary).splitlines()
    assert len(lines) == 5 and "| mindspore | greedy | 40 | 20.0 | 20.0 | 50.0 | 2.00x torch | 2.00x |" in lines
