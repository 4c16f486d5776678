"""`gpt-launch sweep`: real Optuna studies in SQLite, trials that are ordinary tiny runs, pruning,
two workers on one study (one killed mid-trial), and the report."""

import json
import re
import signal
import subprocess
import time

import pytest

from tests.helpers import PYTHON, REPO, child_env, invoke, run_cli, tree_digest

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.slow  # every trial is a process

SPACE = "lr: {low: 1.0e-3, high: 3.0e-2, log: true}\nwarmup_steps: {low: 0, high: 3}\n"
TRAIN = ("--smoke", "--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--sample-tokens", "4")


def sweep_args(folder, *extra, space=SPACE):
    (folder.parent / f"{folder.name}.yaml").write_text(space)
    cache = folder.parent / "cache"
    return [
        "sweep",
        folder.parent / f"{folder.name}.yaml",
        "--output-dir",
        folder,
        *extra,
        *TRAIN,
        "--data-cache",
        cache,
    ]


def study_of(folder):
    record = json.loads((folder / "sweep.json").read_text())
    return optuna.load_study(study_name=record["study"], storage=f"sqlite:///{folder / 'study.db'}")


def test_a_four_trial_sweep_is_four_ordinary_runs_its_best_is_theirs_and_the_seed_repeats_it(tmp_path):
    folder = tmp_path / "lr"
    invoke(*sweep_args(folder, "--trials", "4", "--sampler-seed", "7"), check=True)
    study = study_of(folder)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    best_of_runs = {}
    for t in trials:
        run_dir = folder / f"trial-{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())  # an ordinary finished run
        assert summary["stop_reason"] == "completed" and summary["test"]["bits_per_byte"] > 0
        assert (
            summary["config"]["lr"] == t.params["lr"] and summary["config"]["warmup_steps"] == t.params["warmup_steps"]
        )
        best_of_runs[t.number] = summary["best_validation"]["bits_per_byte"]
        assert t.value == best_of_runs[t.number]
    assert study.best_value == min(best_of_runs.values())
    assert invoke("evaluate", folder / f"trial-{study.best_trial.number:04d}", "--max-batches", "1").exit_code == 0
    report = (folder / "report" / "report.md").read_text()
    assert f"Best: trial {study.best_trial.number}" in report and study.best_trial.user_attrs["command"] in report
    assert {p.name for p in (folder / "report").iterdir()} >= {
        "history.png",
        "importance.png",
        "curves.png",
        "report.html",
    }
    assert "data:image/png;base64," in (folder / "report" / "report.html").read_text()
    # the same seed draws the same trials; the study then refuses another space
    again = tmp_path / "again"
    invoke(*sweep_args(again, "--trials", "1", "--sampler-seed", "7"), check=True)
    before = tree_digest(again)
    changed = invoke(*sweep_args(again, "--trials", "1", "--sampler-seed", "7", space="lr: [0.001, 0.01]\n"))
    assert changed.exit_code == 2 and "was started with other space" in changed.stderr
    assert "new --study-name with its own --output-dir" in changed.stderr and tree_digest(again) == before
    # a second study in a finished study's folder is refused, and nothing of the first is touched
    other = invoke(*sweep_args(again, "--trials", "2", "--study-name", "other", space="lr: [0.001, 0.01]\n"))
    assert other.exit_code == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "holds study 'again'" in other.stderr and "give a new --output-dir" in other.stderr
    assert tree_digest(again) == before
    # more --trials: the study grows by the difference, its finished trial untouched, and the seed
    # draws what the first sweep drew (in another session, as by another worker)
    invoke(*sweep_args(again, "--trials", "2", "--sampler-seed", "7"), check=True)
    assert [t.params for t in study_of(again).get_trials()] == [t.params for t in trials[:2]]
    assert [t.state.name for t in study_of(again).get_trials()] == ["COMPLETE"] * 2
    assert json.loads((again / "sweep.json").read_text())["trials"] == 2
    assert all(tree_digest(again)[k] == v for k, v in before.items() if k.startswith("trial-0000"))
    # fewer --trials than finished: said in one line, and none run
    grown = tree_digest(again)
    fewer = invoke(*sweep_args(again, "--trials", "1", "--sampler-seed", "7"), check=True)
    assert "already has 2 finished trial(s), --trials is 1: none to run" in fewer.stdout
    assert {k: v for k, v in tree_digest(again).items() if k.startswith("trial-")} == {
        k: v for k, v in grown.items() if k.startswith("trial-")
    }


def test_a_hopeless_trial_is_pruned_at_a_validation_and_is_a_finished_run(tmp_path):
    folder = tmp_path / "pruned"
    folder.mkdir()
    study = optuna.create_study(study_name="pruned", storage=f"sqlite:///{folder / 'study.db'}")
    for lr in (2e-2, 1e-7):  # one that learns, then one that cannot
        study.enqueue_trial({"lr": lr, "warmup_steps": 0})
    offline = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    flags = ("--trials", "2", "--pruner", "median", "--prune-after", "1", "--tracker", "wandb")
    invoke(*sweep_args(folder, *flags), check=True, env=offline)
    states = [t.state.name for t in study_of(folder).get_trials()]
    assert states == ["COMPLETE", "PRUNED"]
    summary = json.loads((folder / "trial-0001" / "summary.json").read_text())
    assert summary["stop_reason"].startswith("pruned at step 2") and summary["steps"] == 2
    assert (folder / "trial-0001" / "checkpoints" / "best").exists() and summary["test"]["bits_per_byte"] > 0
    # each trial's W&B run is grouped under the study (WANDB_RUN_GROUP), as its own run file records
    from launch.tracking.wandb_files import wandb_records

    for trial in ("trial-0000", "trial-0001"):
        files = list((folder / trial).rglob("run-*.wandb"))
        runs = [r.run for f in files for r in wandb_records(f) if r.WhichOneof("record_type") == "run"]
        assert runs and {r.run_group for r in runs} == {"pruned"}, trial


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--trials", "0"), "--trials must be >= 1, got 0"),
        (("--trials", "-1"), "--trials must be >= 1, got -1"),
        (("--processes", "0"), "--processes must be >= 1, got 0"),
        (("--grace-period", "-5"), "--grace-period must be >= 2, got -5"),
        (("--prune-after", "-1"), "--prune-after must be >= 1, got -1"),
    ],
)
def test_a_count_out_of_bounds_is_one_line_before_any_file(tmp_path, flags, message):
    result = invoke(*sweep_args(tmp_path / "counts", *flags))
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "counts").exists() and not (tmp_path / "cache").exists()


def test_a_bad_space_or_storage_is_one_line_before_any_work(tmp_path):
    bad = invoke(*sweep_args(tmp_path / "bad", space="lr: {low: 0.1, high: 0.01}\n"))
    assert bad.exit_code == 2 and "upside down" in bad.stderr and not (tmp_path / "bad").exists()
    unreachable = invoke(*sweep_args(tmp_path / "pg", "--storage", "postgresql://me:secret@127.0.0.1:1/none"))
    assert unreachable.exit_code == 2 and "cannot be used" in unreachable.stderr and "secret" not in unreachable.stderr
    assert not (tmp_path / "pg").exists()
    for space, words in (
        ("lr: [0.001]\nwarmup_steps: [0]\nlr: [0.01]\n", "lr is given twice (line 3); keep one"),
        ('batch_size: {choices: [2], keep_tokens_per_step: "false"}\n', "keep_tokens_per_step must be true or false"),
    ):
        refused = invoke(*sweep_args(tmp_path / "space", space=space))
        assert refused.exit_code == 2 and words in refused.stderr and refused.stderr.count("\n") == 1
        assert not (tmp_path / "space").exists()
    both = invoke(*sweep_args(tmp_path / "both"), "--lr", "0.01")
    assert both.exit_code == 2 and "lr is both in SPACE and a fixed flag; keep it in one place" in both.stderr
    assert not (tmp_path / "both").exists()


def test_two_workers_share_a_study_and_one_killed_mid_trial_is_retried_by_the_other(tmp_path):
    """Worker A is killed (SIGKILL) while its trial trains; that trial's run saves on the way (its
    process follows its worker), goes stale after --grace-period, and worker B fails it, retries it
    in the same folder from its checkpoint, and finishes the study. No trial runs twice."""
    folder = tmp_path / "shared"
    args = [PYTHON, "-m", "launch.cli", *map(str, sweep_args(folder, "--trials", "3", "--grace-period", "4"))]
    args[args.index("4", args.index("--max-steps"))] = "16"  # long enough to be killed mid-trial
    env = child_env({})
    a = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = folder / "trial-0000.log"
    deadline = time.time() + 120
    while not (log.exists() and "train:" in log.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    a.send_signal(signal.SIGKILL)
    a.wait()
    b = run_cli(args, timeout=600)
    study = study_of(folder)
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], b.stdout
    killed = next(t for t in study.get_trials() if t.state.name == "FAIL")
    retry = next(t for t in study.get_trials() if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.params == killed.params and retry.user_attrs["run_dir"] == str(folder / "trial-0000")
    # the retry continued the killed trial's run from the checkpoint it saved on the way down
    assert re.search(r"resume: \S+/trial-0000/checkpoints/step-\d+ \(step [1-9]", log.read_text()), log.read_text()
    config = json.loads((folder / "trial-0000" / "train_config.json").read_text())
    assert config["run_name"] == "shared-trial-0"  # named by its folder, not by the retry's number
    run_dirs = [t.user_attrs["run_dir"] for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(set(run_dirs)) == 3


@pytest.fixture
def postgres_server(tmp_path):
    """A real PostgreSQL server for this test (initdb, pg_ctl on a free port, trust on 127.0.0.1);
    skipped where PostgreSQL or psycopg is not installed. As root it runs as the `postgres` user."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    pytest.importorskip("psycopg")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl)")
    from launch.runtime.processes import free_port

    # the server's own folder, outside pytest's (root-only) tree when the server runs as `postgres`
    home, port = Path(tempfile.mkdtemp(prefix="gpt-launch-postgres-")), free_port()
    data, as_user = home / "data", []
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        run_cli([*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres"], timeout=120)
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
        run_cli([*as_user, pg_ctl, "-D", data, "-o", options, "-l", home / "server.log", "-w", "start"], timeout=120)
        run_cli(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweeps"], timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/sweeps"
    finally:
        if data.exists():
            run_cli([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], check=False, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_one_study_on_a_postgresql_server(tmp_path, postgres_server):
    folder = tmp_path / "on-postgres"
    args = [PYTHON, "-m", "launch.cli", *map(str, sweep_args(folder, "--trials", "2", "--storage", postgres_server))]
    workers = [
        subprocess.Popen(args, cwd=REPO, env=child_env({}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="on-postgres", storage=postgres_server)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert len({t.user_attrs["run_dir"] for t in trials}) == 2  # no trial ran twice
    assert sum(o.count("(new):") for o in outputs) == 2  # between them, each trial started once


def test_trials_that_all_fail_stop_the_worker_in_one_line(tmp_path):
    """Fixed flags every trial fails on (stories that are not there): three failures in a row end the
    worker with one line, instead of drawing failing trials for ever."""
    result = invoke(*sweep_args(tmp_path / "failing", "--trials", "4"), "--data", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "3 trials in a row failed" in result.stderr
    assert [t.state.name for t in study_of(tmp_path / "failing").get_trials()] == ["FAIL"] * 3


def test_two_workers_never_draw_the_same_random_start_and_one_seed_repeats_itself():
    """Each trial's sampler is seeded by the sweep's seed and the trial's number: trials of one study
    drawn by different workers differ, and the same number with the same seed draws the same."""
    from launch.commands.sweep import sampler_for
    from launch.settings.commands import SweepSettings

    lr = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    settings = SweepSettings(sampler_seed=7)
    study = optuna.create_study()
    drawn = []
    for number in range(4):  # TPE's first 4 trials are random starts
        study.sampler = sampler_for(settings, number)
        drawn.append(study.ask(lr).params["lr"])
    assert len(set(drawn)) == 4
    again = optuna.create_study(sampler=sampler_for(settings, 2))
    assert again.ask(lr).params["lr"] == drawn[2]  # whichever worker draws trial 2, it draws this
    repeat = optuna.create_study()
    repeat.sampler = sampler_for(settings, 0)
    assert repeat.ask(lr).params["lr"] == drawn[0]


def test_a_worker_stopped_by_sigterm_lets_its_trial_save_and_queues_its_retry(tmp_path):
    """SIGTERM to a worker (a scheduler's preemption) mid-trial: the trial's run saves, the trial is
    failed and queued again with its settings, the worker exits saying how to continue; the same
    command then resumes that trial from its checkpoint in the same folder."""
    folder = tmp_path / "stopped"
    args = [PYTHON, "-m", "launch.cli", *map(str, sweep_args(folder, "--trials", "1"))]
    args[args.index("4", args.index("--max-steps"))] = "16"
    worker = subprocess.Popen(
        args, cwd=REPO, env=child_env({}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = folder / "trial-0000.log"
    deadline = time.time() + 120
    while not (log.exists() and "train:" in log.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0 and "this worker stopped; start the same command again" in output, output
    trials = study_of(folder).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].system_attrs.get("failed_trial") == 0 and trials[1].params == trials[0].params
    assert list((folder / "trial-0000" / "checkpoints").glob("step-*"))  # saved on the way down
    again = run_cli(args, timeout=600)
    assert "trial 1 (retry, resumed)" in again.stdout
    assert re.search(r"resume: \S+/trial-0000/checkpoints/step-\d+ \(step [1-9]", log.read_text())
    assert [t.state.name for t in study_of(folder).get_trials()] == ["FAIL", "COMPLETE"]
