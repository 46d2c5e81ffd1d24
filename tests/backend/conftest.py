import pytest

from tests.support.harness import make_runner


@pytest.fixture(scope="session")
def runner():
    """The backend under test: $MOE_TEST_BACKEND (torch | mindspore), $MOE_MS_MODE."""
    return make_runner()
