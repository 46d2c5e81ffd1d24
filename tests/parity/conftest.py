import pytest

from tests.support.harness import make_runner


@pytest.fixture(scope="session")
def torch_runner():
    return make_runner("torch")


@pytest.fixture(scope="session")
def ms_runner():
    """MindSpore in $MOE_MS_MODE (pynative | graph)."""
    return make_runner("mindspore")
