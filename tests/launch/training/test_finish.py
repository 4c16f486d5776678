"""launch/training/finish.py: its faults, caused for real."""

import json
import signal

import pytest

from tests.faults import (
    comparable,
    train_args,
    untimed,
)
from tests.helpers import REFERENCE, invoke, run_cli


@pytest.mark.slow
def test_killed_during_the_final_test_the_resumed_run_writes_the_same_summary(tmp_path, reference_run):
    out = tmp_path / "run"
    killed = run_cli(train_args(out, *REFERENCE), env={"GPT_LAUNCH_FAULT": "kill-during-test"}, check=False)
    assert killed.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    resumed = invoke("train", "--resume", "auto", "--output-dir", out, check=True)  # the run's own settings
    assert "stopped before its summary was written" in resumed.stdout
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, reference_run))
    assert comparable(summary) == comparable(reference)
    assert (out / "curves.png").exists() and untimed(out) == untimed(reference_run)
