"""`gpt-launch sweep SPACE [train flags]`: a hyperparameter study whose trials are ordinary runs.

A worker takes the next trial from the study (Optuna: TPE by default, seeded), starts it the way a
user starts a run (`python -m launch.cli train ...`, or `accelerate launch` for several processes)
in its own folder under --output-dir, and tells the study how it ended: its best validation
objective, pruned (the run stopped itself at a validation, see launch/training/trial.py), or failed.
Any number of workers, on any number of machines, run one study through one storage; they share
the count of trials, and each trial runs once:

  - a worker keeps its trial's heartbeat; a worker that dies (kill -9, a lost node) stops beating,
    and after --grace-period another worker fails that trial and retries it in the same folder
    with --resume auto, so only its unsaved steps are lost (the trial's process dies with its worker
    and saves on the way: SIGTERM);
  - a worker stopped by Ctrl-C or SIGTERM lets its trial save, marks it failed and queues its retry.

The sweep's folder holds sweep.json (the space, the fixed flags, the study's name), study.db (the
default storage), trial-NNNN/ (a run folder each) and report/ (see sweep_report.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt_core.files import write_json
from launch.errors import UserError, check_writable
from launch.runtime.processes import free_port
from launch.settings.commands import SweepSettings
from launch.settings.config import TrainConfig
from launch.settings.fields import flag_for
from launch.settings.sweep_space import SearchSpace, as_flags, load_space
from launch.training.trial import TRIAL_ENV, make_pruner, open_storage, redact, retry_callback

from .sweep_report import SWEEP_FILE, load_sweep_study, write_sweep_report

MAX_FAILURES_IN_A_ROW = 3  # then the worker stops: a broken flag or space fails every trial alike
SET_BY_THE_SWEEP = ("output_dir", "resume", "overwrite", "run_name")


def fixed_config(train_args: list[str], space: SearchSpace, command) -> TrainConfig:
    """train's own flags, as `command` (train's click command) reads them: every trial starts from these."""
    import click

    from launch.settings.options import given_options
    from launch.training.resume import session_config

    try:
        ctx = command.make_context("train", list(train_args), resilient_parsing=False)
    except click.UsageError as e:
        raise UserError(f"the train flags after SPACE: {e.format_message()}; see gpt-launch train --help") from None
    params = dict(ctx.params)
    smoke = params.pop("smoke")
    given = given_options(ctx, params)
    for name in SET_BY_THE_SWEEP:
        if name in given:
            flag = flag_for(TrainConfig, name)
            raise UserError(
                f"{flag} is the sweep's to set (each trial is a folder under its --output-dir); leave it out"
            )
    both = sorted({d.name for d in space.dimensions} & set(given))
    if both:
        raise UserError(f"{', '.join(both)} is both in SPACE and a fixed flag; keep it in one place")
    base = session_config(TrainConfig(), given, smoke)
    space.check(base)
    return base


def sampler_for(settings: SweepSettings, trial_number: int):
    """A sampler seeded by the sweep's seed and the trial's number: one worker repeats a sweep
    exactly; two workers never draw the same random start."""
    import optuna

    seed = settings.sampler_seed * 100_003 + trial_number
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


def study_name(settings: SweepSettings, folder: Path) -> str:
    return settings.study_name or folder.resolve().name


def open_study(settings: SweepSettings, folder: Path, record: dict):
    """The study, created by the first worker; a later one must bring the same space and flags."""
    import optuna

    url = settings.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    storage = open_storage(url, settings.grace_period)
    name = study_name(settings, folder)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        pruner=make_pruner(settings.pruner, settings.prune_after),
    )
    saved = study.user_attrs.get("sweep")
    if saved is not None:  # studies started before --trials could grow kept it here
        saved = {k: v for k, v in saved.items() if k != "trials"}
    if saved is None:
        study.set_user_attr("sweep", record)
    elif saved != record:
        changed = sorted(k for k in record if saved.get(k) != record[k])
        raise UserError(
            f"study {name!r} was started with other {', '.join(changed)} (a trial must stay comparable and resumable); "
            "use the same SPACE and flags, or a new --study-name with its own --output-dir"
        )
    return study, url


def check_folder_study(folder: Path, name: str) -> None:
    """A sweep's folder holds one study: its trial folders are numbered by that study's trials, so a
    second study there would run its trial 0 in the first one's trial-0000."""
    try:
        recorded = json.loads((folder / SWEEP_FILE).read_text()).get("study")
    except (OSError, ValueError, AttributeError):
        recorded = None
    trials = sorted(p.name for p in folder.glob("trial-*")) if folder.is_dir() else []
    if recorded is None and trials:
        raise UserError(
            f"--output-dir {folder} already holds trial folders ({trials[0]}, ...) but no {SWEEP_FILE}; "
            "give the sweep a new --output-dir"
        )
    if recorded is not None and recorded != name:
        raise UserError(
            f"--output-dir {folder} holds study {recorded!r}; a study {name!r} needs a folder of its own: "
            f"give a new --output-dir (or --study-name {recorded} to continue that study)"
        )


def sweep_command(space: str | None, settings: SweepSettings, train_args: list[str], train, log=print) -> None:
    """`gpt-launch sweep`: this worker's share of the study, then the report; or the report alone."""
    if settings.report:
        folder = Path(settings.output_dir)
        study = load_sweep_study(folder, settings.storage, settings.study_name)
        log(f"sweep: report in {write_sweep_report(folder, study)}")
        return
    if space is None:
        raise UserError(
            "sweep needs SPACE, a YAML file of train settings and their values; see gpt-launch sweep --help"
        )
    log(f"sweep: report in {run_sweep(space, settings, train_args, train, log)}")


def run_sweep(space_path: str, settings: SweepSettings, train_args: list[str], train, log=print) -> Path:
    """This worker's share of the study (`train`: train's click command, which reads the fixed
    flags); returns the report folder."""
    space = load_space(space_path)
    base = fixed_config(train_args, space, train)
    folder = Path(settings.output_dir)
    check_writable(folder, "--output-dir")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    check_folder_study(folder, study_name(settings, folder))
    record = {  # what a later worker must bring alike; --trials is the study's target, which may grow
        "space": space.source,
        "train_args": list(train_args),
        "objective": settings.objective,
        "sampler": settings.sampler,
        "sampler_seed": settings.sampler_seed,
        "pruner": settings.pruner,
        "prune_after": settings.prune_after,
    }
    try:
        study, url = open_study(settings, folder, record)
    except UserError:
        if created:  # nothing left behind by a study that could not start
            shutil.rmtree(folder, ignore_errors=True)
        raise
    write_json(
        folder / SWEEP_FILE, {**record, "trials": settings.trials, "study": study.study_name, "storage": redact(url)}
    )
    worker = Worker(study, url, settings, space, base, list(train_args), folder, log)
    worker.run()
    return write_sweep_report(folder, study)


class Worker:
    def __init__(self, study, url, settings, space, base, train_args, folder, log):
        self.study, self.url, self.s, self.space, self.base = study, url, settings, space, base
        self.train_args, self.folder, self.log = train_args, folder, log
        self.stop_requested = False

    def counts(self) -> tuple[int, int, int]:
        """Trials done (complete or pruned), running, and in all; queued ones (a retry) are the next to ask."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        return done, sum(t.state is TrialState.RUNNING for t in trials), len(trials)

    def run(self) -> None:
        import optuna

        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        failures_in_a_row = 0
        done = self.counts()[0]
        if done >= self.s.trials:
            self.log(
                f"sweep: study {self.study.study_name!r} already has {done} finished trial(s), --trials is "
                f"{self.s.trials}: none to run (a larger --trials continues the study)"
            )
        try:
            while not self.stop_requested:
                if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise UserError(
                        f"{failures_in_a_row} trials in a row failed (their logs: {self.folder}/trial-*.log); "
                        "fix what they say, then start the sweep again: the study continues"
                    )
                optuna.storages.fail_stale_trials(self.study)  # a dead worker's trial: failed, then queued again
                done, running, total = self.counts()
                if done >= self.s.trials:
                    break
                if done + running >= self.s.trials:  # the rest are others' (or a dead worker's, soon stale)
                    time.sleep(max(1.0, self.s.grace_period / 6))
                    continue
                self.study.sampler = sampler_for(self.s, total)
                trial = self.study.ask()
                failed = self.run_trial(trial)
                failures_in_a_row = failures_in_a_row + 1 if failed else 0
        except KeyboardInterrupt:  # between trials: nothing of a trial to save
            self.stop_requested = True
        finally:
            signal.signal(signal.SIGTERM, previous)
        if self.stop_requested:
            self.log("sweep: this worker stopped; start the same command again to continue the study")

    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True
        raise KeyboardInterrupt

    def trial_number(self, trial) -> tuple[int, bool]:
        """The number the trial runs under (a retry: the failed trial's, whose folder it resumes), and
        whether it is a retry."""
        original = type(retry_callback()).retried_trial_number(self.study._storage.get_trial(trial._trial_id))
        return (trial.number, False) if original is None else (original, True)

    def command(self, number: int, values: dict, run_dir: Path, retry: bool) -> list[str]:
        train = ["-m", "launch.cli", "train", *self.train_args, *as_flags(values), "--output-dir", str(run_dir)]
        train += ["--run-name", f"{self.study.study_name}-trial-{number}"]
        train += ["--resume", "auto"] if retry else ["--overwrite"]
        if self.s.processes == 1:
            return [sys.executable, *train]
        launcher = ["accelerate", "launch", "-q", "--multi_gpu", "--num_processes", str(self.s.processes)]
        return [*launcher, "--main_process_port", str(free_port()), *train]

    def run_trial(self, trial) -> bool:
        """Run one trial and tell the study how it ended; True when it failed."""
        from optuna.trial import TrialState

        number, retry = self.trial_number(trial)
        run_dir = self.folder / f"trial-{number:04d}"
        try:
            values = self.space.suggest(trial, self.base)
        except UserError as e:
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"sweep: trial {trial.number} failed: {e}")
            return True
        command = self.command(number, values, run_dir, retry)
        trial.set_user_attr("command", " ".join(["gpt-launch", *command[command.index("train") :]]))
        trial.set_user_attr("run_dir", str(run_dir))
        self.log(
            f"sweep: trial {trial.number} ({'retry, resumed' if retry else 'new'}): {as_flags(values)} -> {run_dir}"
        )
        spec = {
            "storage": self.url,
            "study": self.study.study_name,
            "trial_id": trial._trial_id,
            "pruner": self.s.pruner,
            "prune_after": self.s.prune_after,
            "objective": self.s.objective,
        }
        env = {**os.environ, TRIAL_ENV: json.dumps(spec), "WANDB_RUN_GROUP": self.study.study_name}
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"{run_dir.name}.log", "a") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
            code = self.wait(process, trial)
        return self.tell(trial, run_dir, code)

    def wait(self, process: subprocess.Popen, trial) -> int | None:
        """The trial's exit code, beating its heartbeat meanwhile; None when this worker was stopped."""
        storage, beat = self.study._storage, max(1.0, self.s.grace_period / 6)
        last = 0.0
        try:
            while process.poll() is None:
                if hasattr(storage, "record_heartbeat") and time.time() - last >= beat:
                    storage.record_heartbeat(trial._trial_id)
                    last = time.time()
                time.sleep(0.2)
            return process.returncode
        except KeyboardInterrupt:
            self.stop_requested = True
            process.send_signal(signal.SIGTERM)  # the run saves, then exits
            process.wait()
            return None

    def tell(self, trial, run_dir: Path, code: int | None) -> bool:
        """Tell the study how the trial ended; True when it failed (not when this worker stopped it)."""
        from optuna.trial import TrialState

        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if code == 0 and summary_file.exists() else None
        if summary is None:
            self.study.tell(trial, state=TrialState.FAIL)
            frozen = self.study._storage.get_trial(trial._trial_id)
            if code is None:  # stopped with this worker: queued again, to resume where it saved
                retry_callback()(self.study, frozen)
            self.log(
                f"sweep: trial {trial.number} {'stopped' if code is None else f'failed (exit {code})'}; "
                f"its log: {run_dir.parent / (run_dir.name + '.log')}"
            )
            return code is not None
        if str(summary.get("stop_reason", "")).startswith("pruned"):
            self.study.tell(trial, state=TrialState.PRUNED)
            self.log(f"sweep: trial {trial.number} {summary['stop_reason']}")
            return False
        value = summary["best_validation"][self.s.objective]
        self.study.tell(trial, value)
        self.log(f"sweep: trial {trial.number} done: best validation {self.s.objective} {value:.4f}")
        return False


def _die_with_parent() -> None:
    """In the trial's process: SIGTERM when its worker dies, so the run saves and exits."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
