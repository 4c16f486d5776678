"""launch/training/run_folder.py: a folder holds one run; a failed start leaves none, and a folder
that cannot be written is one line before any work."""

import json
import shutil

from tests.faults import (
    one_error_line,
    train,
)
from tests.helpers import train_here


def test_a_new_run_in_a_folder_that_holds_one_is_refused_unless_overwritten(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / "metrics.jsonl").read_text()
    refused = train_here(run, "--max-steps", "2", check=False)
    one_error_line(refused, f"{run} already holds a run; continue it with --resume auto --output-dir {run}")
    assert "--overwrite" in refused.stderr and (run / "metrics.jsonl").read_text() == before
    (run / "notes.txt").write_text("mine")  # not the run's: --overwrite leaves it
    for logs in (run / "wandb" / "offline-run-1", run / "gpt-launch"):  # W&B's files, TensorBoard's (its project)
        logs.mkdir(parents=True)
        (logs / "events").write_text("an old run's")
    train_here(run, "--max-steps", "2", "--overwrite")
    assert not (run / "wandb").exists() and not (run / "gpt-launch").exists()  # the old run's logs are gone
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [2, 2, 2]
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step-0000002"]
    assert (run / "notes.txt").read_text() == "mine"


def test_failed_runs_leave_no_output_folder(tmp_path):
    train(tmp_path / "run", "--data", str(tmp_path / "missing.jsonl"), check=False)
    (tmp_path / "empty.jsonl").write_text("")
    train(tmp_path / "run", "--data", str(tmp_path / "empty.jsonl"), check=False)
    assert not (tmp_path / "run").exists()
