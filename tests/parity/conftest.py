import pytest

from tests.support.harness import make_runner, run_label, selected_backend


@pytest.fixture(scope="session", autouse=True, params=[run_label("mindspore", selected_backend()[1])])
def mindspore_mode(request):
    """Names MindSpore's mode in every test id (``test_x[mindspore-graph-...]``): one
    parameter, so each test still runs once."""
    return request.param


@pytest.fixture(scope="session")
def torch_runner():
    return make_runner("torch")


@pytest.fixture(scope="session")
def ms_runner(mindspore_mode):
    """MindSpore in $MOE_MS_MODE (pynative | graph)."""
    return make_runner("mindspore")
