"""The device check's own logic, framework-free: the loss-curve comparison against the kept
reference, the verdict on pytest's JUnit XML (skips are failures on the GPU only), and the
runner's failure paths (a step with no result, a spent budget, an unknown step) giving a
FAIL row and a non-zero exit. The whole rehearsal runs in scripts/test.sh (--dry-run)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.device_check import run
from scripts.device_check.curve import compare, curve_of
from scripts.device_check.quickstart import REFERENCE
from scripts.device_check.steps import judge_tests

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_CURVE = {"train": {"10": 8.0, "20": 7.0}, "val": {"0": 8.3, "50": 6.0}}


def test_curve_of_reads_train_and_val_losses():
    records = [{"kind": "val", "step": 0, "val_loss": 8.3}, {"kind": "train", "step": 10, "lm_loss": 8.0},
               {"kind": "train", "step": 20, "lm_loss": None}]
    assert curve_of(records) == {"train": {"10": 8.0}, "val": {"0": 8.3}}


def test_curve_within_tolerance_passes_and_one_point_outside_fails():
    near = {"train": {"10": 8.05, "20": 6.95}, "val": {"0": 8.3, "50": 6.09}}
    result = compare(near, REFERENCE_CURVE, train_atol=0.1, val_atol=0.1)
    assert result["ok"] and result["compared"] == {"train": 2, "val": 2}
    assert result["worst"] == pytest.approx(0.9)
    far = {**near, "val": {"0": 8.3, "50": 6.2}}
    result = compare(far, REFERENCE_CURVE, train_atol=0.1, val_atol=0.1)
    assert not result["ok"] and [p["step"] for p in result["points"] if not p["ok"]] == [50]


def test_a_curve_without_validation_points_does_not_pass():
    assert not compare({"train": {"10": 8.0}, "val": {}}, REFERENCE_CURVE, 0.1, 0.1)["ok"]


def test_a_rehearsal_needs_only_its_validation_points_and_they_must_agree():
    step_zero = {"train": {"1": 8.2}, "val": {"0": 8.3}}  # --until 1: train step 1 is not in the reference
    assert compare(step_zero, REFERENCE_CURVE, 0.1, 0.1, needs=("val",))["ok"]
    assert not compare(step_zero, REFERENCE_CURVE, 0.1, 0.1)["ok"]
    assert not compare({**step_zero, "val": {"0": 8.5}}, REFERENCE_CURVE, 0.1, 0.1, needs=("val",))["ok"]


def test_the_kept_reference_is_a_whole_200_step_run_with_its_tolerance():
    reference = json.loads(REFERENCE.read_text())
    assert (reference["device"], reference["dtype"]) == ("cpu", "float32")
    assert sorted(map(int, reference["curve"]["train"])) == list(range(10, 201, 10))
    assert sorted(map(int, reference["curve"]["val"])) == [0, 50, 100, 150, 200]
    assert 0 < reference["tolerance"]["train_atol"] < 1 and 0 < reference["tolerance"]["val_atol"] < 1
    assert reference["tolerance_basis"]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="{f}"
skipped="{s}" tests="{t}"><testcase classname="a" name="test_a"/>{fail}</testsuite></testsuites>"""


@pytest.mark.parametrize("dry", [True, False], ids=["dry", "device"])
def test_skipped_device_tests_fail_only_on_the_gpu(tmp_path, dry):
    path = tmp_path / "tests.xml"
    path.write_text(JUNIT.format(f=0, s=2, t=5, fail=""))
    status, summary, _ = judge_tests(path, dry)
    assert (status, summary.split(" (")[0]) == ("pass" if dry else "fail", "3 passed, 0 failed, 2 skipped")
    path.write_text(JUNIT.format(f=1, s=0, t=2, fail='<testcase name="test_b"><failure message="x"/></testcase>'))
    status, summary, _ = judge_tests(path, dry)
    assert status == "fail" and "test_b" in summary


def test_a_step_without_result_is_a_failure_with_its_last_line(tmp_path, capsys):
    code = run.main(["--out", str(tmp_path), "--dry-run", "--only", "environment", "--python", "/bin/false"])
    assert code == 1
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("environment", "fail")]
    assert "exit 1, no result" in report["steps"][0]["summary"]
    assert "| environment |" in (tmp_path / "device_check.md").read_text() and "FAIL" in capsys.readouterr().out


def test_a_spent_budget_leaves_steps_not_run_and_fails(tmp_path):
    assert run.main(["--out", str(tmp_path), "--dry-run", "--budget-s", "5", "--only", "tests,compile"]) == 1
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["not run", "not run"] and not report["ok"]


def test_bad_arguments_are_one_line():
    script = subprocess.run(["bash", "scripts/device_check.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 2 and script.stderr.strip().count("\n") == 0 and "--bogus" in script.stderr
    runner = subprocess.run([sys.executable, "-m", "scripts.device_check.run", "--out", "x", "--only", "nope"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert runner.returncode == 2 and "'nope': steps are environment, tests" in runner.stderr
