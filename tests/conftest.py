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


@pytest.fixture(scope="session")
def wandb_offline_run(tmp_path_factory):
    """A finished tiny run logged to W&B offline, as a user without a network makes one."""
    from tests.helpers import tiny_run

    out = tmp_path_factory.mktemp("wandb") / "run"
    tiny_run(out, "--tracker", "wandb", "--max-steps", "4", "--log-every", "1", env={"WANDB_MODE": "offline"})
    return out
