"""scripts/train.py and scripts/convert_checkpoint.py surface bad configs and arguments as
one line on stderr with exit code 2, before any framework starts."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def run(script: str, *args: str, cwd: Path = ROOT):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, named", [
    (["--config", QUICKSTART, "--set", "train.stepz=3"], "train.stepz"),
    (["--config", QUICKSTART, "--set", "train.steps=many"], "train.steps"),
    (["--config", QUICKSTART, "--set", "moe.top_k=0"], "moe.top_k"),
    (["--config", QUICKSTART, "--set", "train.beta2=1.5"], "train.beta2"),
    (["--config", "configs/no_such.yaml"], "no_such.yaml"),
    (["--resume", "runs/no_such_run"], "no_such_run"),
    ([], "--config"),
])
def test_config_errors_are_one_line_with_exit_code_2(args, named):
    result = run("train.py", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_existing_run_dir_is_refused(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step_00000002.safetensors").write_bytes(b"")
    result = run("train.py", "--config", QUICKSTART, "--backend", "torch", "--set", f"run_dir={tmp_path / 'run'}",
                 "--set", "device=cpu")
    assert result.returncode == 2
    assert "--resume" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_convert_without_a_run_is_one_line(tmp_path):
    result = run("convert_checkpoint.py", str(tmp_path / "a"), str(tmp_path / "b"), "--backend", "mindspore")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def saved_run(tmp_path) -> Path:
    """A run directory holding only the quickstart config (as a run killed before its first checkpoint)."""
    from training.config import load_config, save_config
    run_dir = tmp_path / "run"
    save_config(load_config(QUICKSTART, [f"run_dir={run_dir}"]), run_dir / "config.yaml")
    return run_dir


@pytest.mark.parametrize("case, named", [
    ("other_config", "differs from"),
    ("no_checkpoint", "no checkpoint in"),
    ("run_dir_is_a_file", "cannot write there"),
])
def test_resume_and_run_dir_edges_are_one_line(tmp_path, case, named):
    run_dir = saved_run(tmp_path)
    if case == "other_config":
        args = ["--config", str(ROOT / "configs" / "switch.yaml"), "--resume", str(run_dir)]
    elif case == "no_checkpoint":
        args = ["--resume", str(run_dir)]
    else:
        (tmp_path / "file").write_text("")
        args = ["--config", QUICKSTART, "--set", f"run_dir={tmp_path / 'file' / 'run'}"]
    result = run("train.py", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_a_missing_module_is_one_line_naming_it():
    """A Python without the project's dependencies (say, not .venv/bin/python) is told which
    module is missing and how to install it, not shown an UnboundLocalError traceback."""
    run_script = ("import runpy, sys; sys.modules['safetensors'] = None; "
                  f"sys.argv = ['train.py', '--config', {QUICKSTART!r}, '--backend', 'torch']; "
                  "runpy.run_path('scripts/train.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", run_script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'safetensors'" in lines[0] and "setup_env.sh" in lines[0], result.stderr
