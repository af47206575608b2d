import pytest

from harness import mock_and_kraken


@pytest.fixture
async def stack(tmp_path):
    """(mock provider, running Kraken) for gateway tests."""
    async with mock_and_kraken(tmp_path) as pair:
        yield pair
