"""Metrics JSONL + TensorBoard and the end-of-run plots."""
import importlib.util
import json
import sys
import warnings

import numpy as np

from training.metrics_log import MetricsLog, read_records
from training.plots import plot_run


def write_run(run_dir, steps, resume_step=None, log_lines=None):
    log = MetricsLog(run_dir, resume_step=resume_step, log=print if log_lines is None else log_lines.append)
    for step in steps:
        load = np.array([[4.0 + step, 2.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
        log.log("train", step, {"lm_loss": np.float64(5.0 - 0.1 * step), "tokens_per_expert": load,
                                "layers.mean_true_experts_per_token": np.array([2.0, 1.5]),
                                "grad_norm": float("nan")})
        if step % 2 == 0:
            log.log("val", step, {"val_loss": 5.0 - 0.05 * step, "val_ppl": float(np.exp(5.0 - 0.05 * step))})
    log.close()


def test_records_round_trip_and_nan_becomes_null(tmp_path):
    write_run(tmp_path, range(1, 5))
    records = list(read_records(tmp_path / "metrics.jsonl"))
    assert [(r["kind"], r["step"]) for r in records][:3] == [("train", 1), ("train", 2), ("val", 2)]
    assert records[0]["tokens_per_expert"] == [[5.0, 2.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]
    assert records[0]["grad_norm"] is None
    if importlib.util.find_spec("tensorboardX"):
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_without_tensorboardx_one_line_and_the_jsonl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    lines = []
    write_run(tmp_path, range(1, 3), log_lines=lines)
    assert len(lines) == 1 and "tensorboardX is not installed" in lines[0]
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "train"] == [1, 2]
    assert not (tmp_path / "tensorboard").exists()


def test_resume_drops_records_after_the_checkpoint(tmp_path):
    write_run(tmp_path, range(1, 7))
    write_run(tmp_path, range(5, 9), resume_step=4)  # crashed after step 6, resumed from 4
    steps = [r["step"] for r in read_records(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 9))


def test_plots_are_written(tmp_path):
    write_run(tmp_path, range(1, 9))
    written = plot_run(tmp_path)
    assert set(written) == {"loss_curves", "expert_load", "true_experts"}
    for path in written.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_a_run_with_one_logged_step_plots_without_warnings(tmp_path):
    write_run(tmp_path, [1])  # shorter than train.log_every: matplotlib warned of a singular x range
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(plot_run(tmp_path)) == {"loss_curves", "expert_load", "true_experts"}


def test_dense_run_plots_only_losses(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.log("train", 1, {"lm_loss": 5.0})
    log.close()
    assert set(plot_run(tmp_path)) == {"loss_curves"}
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["lm_loss"] == 5.0
