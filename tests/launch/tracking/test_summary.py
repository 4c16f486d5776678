"""launch/tracking/summary.py: the typed run summary that report, share and export read."""

import json

import pytest

from launch.errors import UserError
from launch.tracking.summary import RunSummary


def test_a_finished_runs_summary_reads_back_typed(finished_run, tmp_path):
    summary = RunSummary.load(finished_run)
    raw = json.loads((finished_run / "summary.json").read_text())
    assert summary.steps == raw["steps"] == 8 and summary.test == raw["test"] and summary.extra == {}
    assert dict(summary.rows())["optimizer steps"] == "8"
    summary.extra["added_later"] = 1  # a key a newer version wrote survives a round trip
    summary.save(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == {**raw, "added_later": 1}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_or_broken_summary_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"has no summary\.json"):
        RunSummary.load(tmp_path)
    (tmp_path / "summary.json").write_text('{"steps": 3}')
    with pytest.raises(UserError, match="is not a run summary"):
        RunSummary.load(tmp_path)
