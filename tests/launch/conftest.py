"""What the tests of launch/ share."""

import pytest


@pytest.fixture(scope="module")
def run_dir(finished_run):
    """The session's tiny finished run, which these tests only read."""
    return finished_run
