"""launch/checkpoints/saving.py: its faults, caused for real."""

import signal

import pytest

from tests.faults import one_error_line, train, train_args, with_file_size_limit
from tests.helpers import REFERENCE, outcome, run_cli


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_never_leaves_a_pickable_one(tmp_path, straight):
    out = tmp_path / "run"
    train(out, *REFERENCE, "--stop-after-steps", "4")  # a complete step-4 checkpoint
    fault = {"GPT_LAUNCH_FAULT": "kill-while-saving"}
    killed = run_cli(train_args(out, *REFERENCE, "--resume", "auto"), env=fault, check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*"))[-1] == "step-0000004"
    temporary = [p.name for p in ckpts.glob(".tmp-step-*")]
    assert temporary == [".tmp-step-0000006"], "the half-written one keeps its temporary name"
    resumed = train(out, *REFERENCE, "--resume", "auto")
    assert "step-0000004" in resumed.stdout
    assert outcome(out) == straight


@pytest.mark.slow
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, straight):
    out = tmp_path / "run"
    train(out, *REFERENCE, "--stop-after-steps", "4")
    step_4 = out / "checkpoints" / "step-0000004"
    before = {p.name: p.stat().st_size for p in step_4.rglob("*") if p.is_file()}
    # smaller than the optimizer state: the next save cannot complete
    proc = with_file_size_limit(train_args(out, *REFERENCE, "--resume", "auto"), 4 << 20)
    one_error_line(proc, "no space left")
    assert "the previous checkpoint step-0000004 is intact" in proc.stderr
    assert {p.name: p.stat().st_size for p in step_4.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*"))[-1] == "step-0000004"
    assert not list((out / "checkpoints").glob(".tmp-step-*"))
    train(out, *REFERENCE, "--resume", "auto")  # with space again, nothing was lost
    assert outcome(out) == straight


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint_does_not_promise_an_earlier_one(tmp_path):
    proc = with_file_size_limit(train_args(tmp_path / "run", "--max-steps", "4", "--save-every", "1"), 4 << 20)
    one_error_line(proc, "no earlier checkpoint exists")
    assert "intact" not in proc.stderr
