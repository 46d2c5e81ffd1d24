import pytest

from tests.support.harness import make_runner, run_label, selected_backend


@pytest.fixture(scope="session", autouse=True, params=[run_label(*selected_backend())])
def backend(request):
    """Names the backend under test in every test id (``test_x[torch-...]``,
    ``test_x[mindspore-pynative-...]``): one parameter, so each test still runs once."""
    return request.param


@pytest.fixture(scope="session")
def runner(backend):
    """The backend under test: $MOE_TEST_BACKEND (torch | mindspore), $MOE_MS_MODE."""
    return make_runner()
