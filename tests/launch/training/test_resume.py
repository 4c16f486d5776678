"""launch/training/resume.py: where a session starts. A run remembers its settings, a folder holds one run,
and what resuming may change is grouped by what it breaks."""

import json
import shutil
import subprocess

import pytest

from launch.settings.config import TrainConfig
from launch.settings.fields import replace_paths
from launch.training.resume import for_next_session, resume_changes
from tests.faults import (
    one_error_line,
    start,
    train,
    train_args,
    wait_for_step,
)
from tests.helpers import REFERENCE, invoke, outcome, train_here


def test_resume_changes_are_grouped_by_what_they_break():
    saved = TrainConfig(stop_after_steps=5, max_minutes=10.0)
    now = replace_paths(
        saved, {"data.source": "other.jsonl", "batch_size": 3, "lr": 1e-3, "log_every": 1, "stop_after_steps": 7}
    )
    changes = resume_changes(saved, now)
    assert changes["fixed"] == ["--data 'roneneldan/TinyStories' -> 'other.jsonl'", "--batch-size None -> 3"]
    assert changes["warn"] == ["--lr 0.0002 -> 0.001"]
    assert changes["free"] == ["--log-every 10 -> 1"] and changes["session"] == ["--stop-after-steps 5 -> 7"]
    # a session's pause limits are not carried into the next session
    nxt = for_next_session(saved, TrainConfig())
    assert nxt.stop_after_steps is None and nxt.max_minutes is None and nxt.lr == saved.lr


def test_resume_from_a_folder_that_is_not_a_checkpoint_says_so_before_any_data_work(tmp_path, monkeypatch):
    (tmp_path / "not-a-run").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no --data: the paper's hub data would be tried first
    result = invoke("train", "--resume", tmp_path / "not-a-run", "--data-cache", tmp_path / "cache")
    one_error_line(result, "is not a resumable checkpoint (trainer_state.json is missing)")
    assert not (tmp_path / "cache").exists()


def test_a_torn_last_line_of_the_metrics_is_dropped_on_resume(paused_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 3')  # a kill in the middle of a write
    resumed = train_here(run, "--max-steps", "8", "--eval-every", "2", "--resume", "auto")
    assert "dropped the last line of" in resumed.stdout and "cut short by an interrupted write" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["steps"] == 8


def resume(run, *extra):
    return invoke("train", "--resume", "auto", "--output-dir", run, *extra)


def one_line(result, words):
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.output
    return errors[0]


def test_a_settings_file_that_is_not_an_object_or_is_missing_is_one_line(paused_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    (run / "train_config.json").write_text("[1, 2]\n")
    one_line(resume(run), "is not a readable run config (it holds a JSON list, not an object of settings)")
    (run / "train_config.json").unlink()  # the run's settings are unknown: not the paper's defaults
    line = one_line(resume(run), "train_config.json is missing, so this run's settings")
    assert "--allow-changes" in line and "hub" not in line


@pytest.mark.slow  # trains for seconds
def test_values_that_do_nothing_get_a_note_at_the_start(tmp_path):
    result = train_here(
        tmp_path / "run", "--max-steps", "3", "--profile-steps", "2", "--schedule", "cosine", "--decay-fraction", "0.5"
    )
    lines = result.stdout.splitlines()
    first_step = next(i for i, line in enumerate(lines) if line.startswith("train: "))
    notes = [i for i, line in enumerate(lines) if line.startswith("note: ")]
    assert any("--decay-fraction 0.5 applies to --schedule wsd only: ignored with cosine" in lines[i] for i in notes)
    assert any(
        "--profile-steps 2 would record steps 3 to 4, but this session ends at step 3" in lines[i] for i in notes
    )
    assert all(i < first_step + 3 for i in notes), "said at the start"
    assert not (tmp_path / "run" / "profile").exists()


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_auto(tmp_path, straight):
    out = tmp_path / "run"
    proc = start(train_args(out, *REFERENCE))
    wait_for_step(out, 7, proc)
    proc.kill()
    proc.wait()
    train(out, *REFERENCE, "--resume", "auto")
    assert outcome(out) == straight  # bit for bit after the resume, every step once


def test_a_read_only_run_folder_is_one_line_that_does_not_blame_the_disk(paused_run, tmp_path):

    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    checkpoints = run / "checkpoints"
    if subprocess.run(["chattr", "+i", str(checkpoints)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        line = one_line(resume(run), f"cannot write in {checkpoints}")
    finally:
        subprocess.run(["chattr", "-i", str(checkpoints)], check=True)
    assert "make it writable" in line and "free space" not in line


def test_a_resumed_session_may_turn_compile_off(paused_run, tmp_path):
    """--compile is a speed setting: a run started with it (here: its saved settings say so) resumes
    with --no-compile, e.g. on an engine that cannot compile, and continues as the same run."""
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    saved = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**saved, "compile": True}))
    result = train_here(run, "--resume", "auto", "--no-compile")
    assert "resume: warning" not in result.stdout
    assert json.loads((run / "train_config.json").read_text())["compile"] is False
    assert json.loads((run / "summary.json").read_text())["steps"] == 8
