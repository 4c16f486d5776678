"""launch/training/trial.py: a sweep's storage and pruners as its runs see them, in this process
against real Optuna studies (SQLite and a journal file)."""

import pytest

from launch.training.trial import TrialReport, make_pruner, open_storage

optuna = pytest.importorskip("optuna")


def pruned_at(pruner_name: str, storage) -> int | None:
    """Four trials that learn, each asking the pruner at every validation as a run does; then one
    that does not: the step its pruner stops it at, or None."""
    study = optuna.create_study(storage=storage, pruner=make_pruner(pruner_name, prune_after=1))
    for k in range(4):
        trial = study.ask()
        for step in range(1, 9):
            trial.report(1.0 - 0.01 * step + 0.001 * k, step)
            trial.should_prune()
        study.tell(trial, 0.92 + 0.001 * k)
    hopeless = study.ask()
    for step in range(1, 9):
        hopeless.report(5.0, step)
        if hopeless.should_prune():
            return step
    return None


@pytest.mark.parametrize(("pruner", "step"), [("median", 1), ("halving", 1), ("none", None)])
def test_each_pruner_stops_a_hopeless_trial_or_none_does(tmp_path, pruner, step):
    assert pruned_at(pruner, open_storage(f"sqlite:///{tmp_path / 'study.db'}")) == step


def test_a_journal_file_holds_a_study_that_another_worker_reads(tmp_path):
    """journal:PATH, for workers that share a disk but no database: one opens the study and runs a
    trial; another, opening the same file afresh, sees it and continues the count."""
    url = f"journal:{tmp_path / 'study.log'}"
    first = optuna.create_study(study_name="shared", storage=open_storage(url))
    trial = first.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    first.tell(trial, 1.5)
    second = optuna.load_study(study_name="shared", storage=open_storage(url))
    assert [(t.number, t.value) for t in second.get_trials()] == [(0, 1.5)]
    assert second.ask().number == 1
    assert pruned_at("median", open_storage(f"journal:{tmp_path / 'other.log'}")) == 1  # it prunes there too


def test_a_run_that_is_no_trial_reports_nothing_and_is_never_pruned(monkeypatch):
    monkeypatch.delenv("GPT_LAUNCH_TRIAL", raising=False)
    report = TrialReport.from_environment()
    assert report.spec is None and report.prune({"bits_per_byte": 99.0}, step=2, accelerator=None) is None
