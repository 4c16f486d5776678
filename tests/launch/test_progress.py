"""launch/progress.py: progress as plain lines when the output is not a terminal."""

from launch import progress as progress_module
from launch.progress import ProgressLines, progress


def test_off_a_terminal_progress_is_plain_lines_at_intervals_and_at_the_end(capsys, monkeypatch):
    bar = progress(10, "train", "step")  # pytest's stderr is not a terminal
    assert isinstance(bar, ProgressLines)
    with bar:
        bar.update(3)  # within the interval: nothing yet
        monkeypatch.setattr(progress_module, "REPORT_EVERY_S", 0.0)
        bar.set_postfix(loss="3.100")
        bar.update(2)
    err = capsys.readouterr().err
    assert err.splitlines() == ["train: 5/10 steps (50%), loss=3.100", "train: 5/10 steps (50%), loss=3.100"]
    assert "\r" not in err


def test_a_disabled_progress_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "REPORT_EVERY_S", 0.0)
    with progress(4, "test", "batch", enabled=False) as bar:
        bar.update(4)
    assert capsys.readouterr().err == ""
