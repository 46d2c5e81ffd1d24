"""The curves of scripts/experiments/run_metrics.py on hand-made records: where a validation
curve reaches a target (interpolated between evaluations, None when never), and training
seconds with each validation's time taken out; the Switch comparison built on them; what
--report-only keeps of an earlier results file (scripts/reporting/results_files.py), and
which seeds a call trains (scripts/experiments/lm_runs.py)."""
import pytest

import json

from scripts.experiments.lm_runs import seeds_to_train
from scripts.experiments.run_metrics import curves_from_records, reach, seconds_at
from scripts.experiments.switch_vs_dense import compare
from scripts.reporting.results_files import call_history, run_info
from scripts.reporting.stats import stats


def records(val_losses, step_seconds=1.0, eval_seconds=10.0, every=10):
    """A run evaluated every ``every`` steps: each step takes ``step_seconds``, each validation
    ``eval_seconds`` (the step-0 one included)."""
    out, elapsed = [{"kind": "val", "step": 0, "val_loss": val_losses[0], "elapsed_s": eval_seconds}], eval_seconds
    for i, loss in enumerate(val_losses[1:], 1):
        elapsed += every * step_seconds
        out.append({"kind": "train", "step": i * every, "elapsed_s": elapsed, "tokens_per_s": 100.0})
        elapsed += eval_seconds
        out.append({"kind": "val", "step": i * every, "val_loss": loss, "elapsed_s": elapsed})
    return out


def test_reach_interpolates_between_evaluations():
    assert reach([0, 10, 20], [5.0, 4.0, 3.0], 3.5) == pytest.approx(15.0)
    assert reach([0, 10, 20], [5.0, 4.0, 3.0], 4.0) == pytest.approx(10.0)
    assert reach([0, 10, 20], [5.0, 4.0, 3.0], 6.0) == 0.0


def test_reach_is_none_when_the_target_is_never_met():
    assert reach([0, 10, 20], [5.0, 4.0, 3.5], 3.0) is None


def test_reach_takes_the_first_crossing_of_a_noisy_curve():
    assert reach([0, 10, 20, 30], [5.0, 3.0, 4.0, 2.0], 3.5) == pytest.approx(7.5)


def test_training_seconds_exclude_validation():
    curves = curves_from_records(records([5.0, 4.0, 3.0], step_seconds=2.0, eval_seconds=7.0))
    assert curves.val_steps == [0, 10, 20]
    assert curves.train_seconds == pytest.approx([0.0, 20.0, 40.0])
    assert seconds_at(curves, 15) == pytest.approx(30.0)


def test_a_validation_without_a_train_record_at_its_step_is_refused():
    broken = [r for r in records([5.0, 4.0]) if r["kind"] == "val"]
    with pytest.raises(ValueError, match="log_every"):
        curves_from_records(broken)


def test_compare_gives_speedups_in_steps_and_time():
    dense = curves_from_records(records([6.0, 5.0, 4.0, 3.0], step_seconds=1.0))
    switch = curves_from_records(records([6.0, 4.0, 3.0, 2.5], step_seconds=2.0))
    result = compare(dense, switch)
    assert result["target_val_loss"] == 3.0
    assert result["switch_steps_to_target"] == pytest.approx(20.0)
    assert result["speedup_steps"] == pytest.approx(1.5)
    assert result["speedup_seconds"] == pytest.approx(30.0 / 40.0)
    assert result["speedup_median_time"] == pytest.approx(1.5)  # both records say 100 tokens/s


def test_compare_reports_no_speedup_when_the_target_is_missed():
    dense = curves_from_records(records([6.0, 5.0, 2.0]))
    switch = curves_from_records(records([6.0, 4.0, 3.0]))
    assert compare(dense, switch)["speedup_steps"] is None


def test_stats_of_one_value_has_zero_spread():
    assert stats([2.0]) == {"mean": 2.0, "sd": 0.0, "min": 2.0, "max": 2.0, "n": 1}
    assert stats([1.0, 3.0])["sd"] == pytest.approx(2 ** 0.5)


def test_run_info_keeps_an_earlier_runs_date_and_command(tmp_path):
    path = tmp_path / "x.json"
    assert run_info(path) == {}
    path.write_text(json.dumps({"machine": {"date_utc": "d"}, "command": "c", "summary": {}}))
    assert run_info(path) == {"machine": {"date_utc": "d"}, "command": "c"}


def test_seeds_to_train_is_a_subset_of_the_reported_seeds():
    assert seeds_to_train([0, 1, 2], None, report_only=False) == [0, 1, 2]
    assert seeds_to_train([0, 1, 2], [2, 2], report_only=False) == [2]
    assert seeds_to_train([0, 1, 2], [2], report_only=True) == []
    with pytest.raises(SystemExit, match="not among"):
        seeds_to_train([0, 1], [2], report_only=False)


def test_call_history_keeps_the_earlier_calls_only_when_their_runs_are_reused(tmp_path):
    path, now = tmp_path / "x.json", {"command": "new"}
    path.write_text(json.dumps({"machine": {"date_utc": "d"}, "command": "old"}))
    assert call_history(path, [0, 1], [0, 1], now) == [now]
    assert call_history(path, [0, 1], [1], now) == [{"machine": {"date_utc": "d"}, "command": "old"}, now]
    path.write_text(json.dumps({"command": "old", "runs": [{"command": "a"}, {"command": "b"}]}))
    assert call_history(path, [0, 1, 2], [2], now) == [{"command": "a"}, {"command": "b"}, now]
    assert call_history(path, [0, 1], [], now) == [{"command": "a"}, {"command": "b"}]
    assert call_history(tmp_path / "none.json", [0, 1], [1], now) == [now]
