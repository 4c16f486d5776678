import pytest

from tests.helpers import SHARED_TINYSTORIES


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_tinystories():
    if not SHARED_TINYSTORIES.is_dir():
        pytest.skip(f"real TinyStories files not found at {SHARED_TINYSTORIES}")
    return SHARED_TINYSTORIES
