"""The Results experiments' reductions of a metrics log (scripts/experiments/run_metrics.py and
locmoe_plus_vs_cf.slots_per_expert), their statistics over seeds and tables
(scripts/reporting/) on hand-made records."""
import json
import math

import pytest

from scripts.experiments.lm_runs import as_overrides
from scripts.experiments.locmoe_plus_vs_cf import slots_per_expert
from scripts.experiments.run_metrics import load_ratio, summarise
from scripts.reporting.results_files import merge_runs, write_results
from scripts.reporting.stats import paired_difference, stats
from scripts.reporting.tables import markdown_table


def records():
    """A 4-step run: validation at steps 0 and 4; two MoE layers of 2 experts."""
    out = [{"kind": "val", "step": 0, "val_loss": 8.0}]
    for step, (load, drop, rate) in enumerate([([[4, 0], [2, 2]], 0.5, 100.0), ([[4, 0], [2, 2]], 0.5, 100.0),
                                               ([[3, 1], [2, 2]], 0.25, 300.0), ([[2, 2], [1, 3]], 0.0, 500.0)], 1):
        out.append({"kind": "train", "step": step, "tokens_per_expert": load, "dropped_fraction": drop,
                    "mean_true_experts_per_token": 1.0, "tokens_per_s": rate, "elapsed_s": float(step),
                    "layers.expert_flops": [40.0, 80.0]})
    out.append({"kind": "val", "step": 4, "val_loss": 6.5})
    return out


def test_load_ratio_is_max_over_mean_averaged_over_layers():
    assert load_ratio([[4, 0], [2, 2]]) == pytest.approx((2.0 + 1.0) / 2)
    assert load_ratio([1, 1, 1, 1]) == 1.0
    assert math.isnan(load_ratio([[0, 0]]))


def test_summarise_reads_the_last_half_of_the_train_records():
    s = summarise(records())
    assert (s["val_loss"], s["first_val_loss"]) == (6.5, 8.0)
    assert s["dropped_fraction"] == pytest.approx(0.125)  # steps 3 and 4 only
    assert s["load_max_over_mean"] == pytest.approx(((1.5 + 1.0) / 2 + (1.0 + 1.5) / 2) / 2)
    assert s["tokens_per_expert"] == pytest.approx(2.0)
    assert s["tokens_per_s"] == pytest.approx(400.0)
    assert s["elapsed_s"] == 4.0


def test_summarise_of_a_dense_run_has_no_routing_numbers():
    dense = [r if r["kind"] == "val" else {"kind": "train", "step": r["step"], "tokens_per_s": 1.0, "elapsed_s": 1.0}
             for r in records()]
    s = summarise(dense)
    assert s["dropped_fraction"] is None and s["load_max_over_mean"] is None and s["val_loss"] == 6.5


def test_slots_per_expert_divides_expert_flops_by_row_flops_and_experts():
    assert slots_per_expert(records(), num_experts=2, flops_per_row=10.0) == pytest.approx(3.0)


def test_stats_skip_missing_values():
    assert stats([1.0, None, 3.0]) == {"mean": 2.0, "sd": pytest.approx(math.sqrt(2.0)), "min": 1.0, "max": 3.0, "n": 2}
    assert stats([None]) == {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    assert stats([5.0])["sd"] == 0.0


def test_overrides_and_table_format():
    assert as_overrides({"train.steps": 10, "data.corpora": ["a", "b"]}) == ["train.steps=10",
                                                                             'data.corpora=["a", "b"]']
    assert markdown_table(["a", "b"], [["x", "1"]]).splitlines() == ["| a | b |", "| --- | ---: |", "| x | 1 |"]


def test_merge_runs_adds_seeds_and_replaces_a_rerun_seed():
    into = {"a": {"0": {"v": 1}, "1": {"v": 2}}}
    merge_runs(into, {"a": {"1": {"v": 3}, "2": {"v": 4}}, "b": {"0": {"v": 5}}})
    assert into == {"a": {"0": {"v": 1}, "1": {"v": 3}, "2": {"v": 4}}, "b": {"0": {"v": 5}}}


def test_paired_difference_uses_only_the_seeds_both_ran_without_error():
    runs = {"0": {"val_loss": 5.0}, "1": {"val_loss": 4.0}, "2": {"val_loss": 1.0}, "3": {"error": "x"}}
    reference = {"0": {"val_loss": 5.5}, "1": {"val_loss": 4.5}, "2": {"error": "x"}, "3": {"val_loss": 1.0}}
    assert paired_difference(runs, reference) == {"mean": -0.5, "sd": 0.0, "min": -0.5, "max": -0.5, "n": 2}
    assert paired_difference(runs, {})["n"] == 0


def test_write_results_puts_one_provenance_line_per_call_above_the_table(tmp_path):
    call = {"command": "c", "date_utc": "d", "cores": 2, "cpu": "x", "load_average": [1.0]}
    paths = write_results("exp", {"a": 1}, "| t |", calls=[call], out_dir=tmp_path)
    assert paths == {"json": tmp_path / "exp.json", "table": tmp_path / "exp_table.md"}
    assert json.loads(paths["json"].read_text()) == {"a": 1}
    assert paths["table"].read_text() == "- `c`: d UTC, 2-core x, load average at the end [1.0]\n\n| t |\n"
    assert write_results("bare", {}, "| t |\n", out_dir=tmp_path)["table"].read_text() == "| t |\n"
