"""Every scripts/*.py answers --help from the repository root without PYTHONPATH (python -I):
exit 0, its usage line, no traceback. The scripts put the repository on sys.path themselves
and import the frameworks only when they run; all start at once to keep this cheap."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.name for path in (ROOT / "scripts").glob("*.py"))


@pytest.fixture(scope="module")
def helps():
    started = {script: subprocess.Popen([sys.executable, "-I", f"scripts/{script}", "--help"], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for script in SCRIPTS}
    outputs = {script: process.communicate(timeout=120) for script, process in started.items()}
    return {script: (process.returncode, *outputs[script]) for script, process in started.items()}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_runs_without_pythonpath(helps, script):
    returncode, out, err = helps[script]
    assert returncode == 0, err
    assert out.startswith(f"usage: {script}") and "Traceback" not in out + err
