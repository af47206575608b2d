import pytest


@pytest.fixture
def anyio_backend():
    """Tests run on uvloop, like production."""
    return ("asyncio", {"use_uvloop": True})
