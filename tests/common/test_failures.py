"""A rank's failure is reported by its real cause (launch.failures, scripts/train.py): a
failed or timed-out collective is "another rank died or stalled" (exit 4), running out of
memory says so (exit 5), and anything else (a shape error, a bug) names its type and message
(exit 1), where every RuntimeError used to read "another rank died or stalled"."""
from pathlib import Path

import pytest

from launch.failures import COLLECTIVE, OTHER, OUT_OF_MEMORY, describe_failure


class DistBackendError(RuntimeError):
    """Named like torch.distributed's."""


class OutOfMemoryError(RuntimeError):
    """Named like torch's."""


@pytest.mark.parametrize("error, code, fragment", [
    (DistBackendError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error"), COLLECTIVE,
     "another rank died or stalled"),
    (RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:2695"), COLLECTIVE,
     "another rank died or stalled"),
    (RuntimeError("Timed out waiting 15000ms for recv operation to complete"), COLLECTIVE, "timed out"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), OUT_OF_MEMORY,
     "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)"),
    (MemoryError(), OUT_OF_MEMORY, "out of memory"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x16 and 8x16)"), OTHER,
     "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x16 and 8x16)"),
    (RuntimeError("For 'Add', x.shape and y.shape need to broadcast. The value of x.shape[-1] is 3"), OTHER,
     "RuntimeError: For 'Add'"),
])
def test_each_failure_names_its_cause(error, code, fragment):
    got, line = describe_failure(error, 3, 15.0)
    assert got == code and line.startswith("error: rank 3: ") and fragment in line and "\n" not in line
    assert ("another rank died or stalled" in line) == (code == COLLECTIVE)


def test_train_py_reports_a_shape_error_by_its_cause(monkeypatch, capsys, tmp_path):
    """scripts/train.py on a rank (RANK set): a RuntimeError that is not a collective's."""
    import scripts.train as train
    import training.trainer as trainer

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x16 and 8x16)")

    monkeypatch.setattr(trainer, "Trainer", Broken)
    monkeypatch.setenv("RANK", "1")
    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    code = train.main(["--config", str(config), "--set", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == OTHER
    assert err.strip().splitlines()[-1] == ("error: rank 1: RuntimeError: mat1 and mat2 shapes cannot be multiplied "
                                            "(4x16 and 8x16) (traceback above and in the rank's log)")
    assert "Traceback" in err and "another rank died" not in err
