"""A sweep's study as its runs see it: where it lives, how it prunes, and a trial's run reporting
each validation to it as it happens.

`gpt-launch sweep` starts each trial as an ordinary `train` run and tells it its trial through the
GPT_LAUNCH_TRIAL environment variable (the storage URL may hold a password: it stays out of the
run's files). The run reports every validation's objective; when the study's pruner calls the
trial hopeless, the run stops at that validation as a finished run (tested, summarised, its last
checkpoint saved) whose stop reason says it was pruned.
"""

from __future__ import annotations

import inspect
import json
import os
import time

from gpt_core.errors import first_line
from launch.errors import UserError
from launch.runtime.processes import any_process

from .state import StopKind, StopReason

TRIAL_ENV = "GPT_LAUNCH_TRIAL"


def open_storage(url: str, grace_period: int = 60):
    """Optuna's storage for `url`: an SQLAlchemy URL (with heartbeats, so a dead worker's trial is
    failed and retried) or journal:PATH, a file any number of workers share through its lock."""
    import warnings

    import optuna

    # Heartbeats and their retry are "experimental" to Optuna since 2.8, and said to belong to
    # Study.optimize: our workers keep the heartbeat themselves (launch/commands/sweep.py).
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    for attempt in range(3):
        try:
            if url.startswith("journal:"):
                backend = optuna.storages.journal.JournalFileBackend(url.removeprefix("journal:"))
                return optuna.storages.JournalStorage(backend)
            # a worker beats for its trial every grace_period / 6 s; silent for grace_period, it is failed
            heartbeat = max(1, grace_period // 6)
            renamed = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
            callback = {"heartbeat_stale_trial_callback" if renamed else "failed_trial_callback": retry_callback()}
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace_period, **callback)
        except Exception as e:  # SQLAlchemy's and the drivers' many errors: each means "cannot use it"
            error = e
            # Workers starting together on a fresh database race to create its tables: the loser's
            # error is a duplicate it can retry past; anything else fails the same way again.
            if "duplicate key" not in str(e) and "already exists" not in str(e):
                break
            time.sleep(1 + attempt)
    raise UserError(
        f"--storage {redact(url)} cannot be used ({first_line(error)}); check the URL and that it is reachable"
    ) from None


def retry_callback(max_retry: int = 2):
    """Optuna's callback that queues a failed (stale) trial again with its parameters and its reported
    validations; renamed in Optuna 4.9 (as is the storage's argument that takes it)."""
    from optuna import storages

    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return retry(max_retry=max_retry, inherit_intermediate_values=True)


def redact(url: str) -> str:
    """`url` with any password replaced, for messages and files."""
    head, at, tail = url.partition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}" if ":" in credentials else url


def make_pruner(name: str, prune_after: int = 4):
    """`prune_after`: the trials that finish before the median pruner judges a trial against them."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=prune_after, n_warmup_steps=0, interval_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


class TrialReport:
    """The run's side of a trial: report, and ask whether to stop. A run that is no trial (`spec`
    None) reports nothing and is never pruned."""

    def __init__(self, spec: dict | None):
        self.spec = spec
        self._trial = None

    @classmethod
    def from_environment(cls) -> TrialReport:
        raw = os.environ.get(TRIAL_ENV)
        return cls(json.loads(raw) if raw else None)

    def trial(self):
        if self._trial is None:
            import optuna

            storage = open_storage(self.spec["storage"])
            study = optuna.load_study(
                study_name=self.spec["study"],
                storage=storage,
                pruner=make_pruner(self.spec["pruner"], self.spec["prune_after"]),
            )
            self._trial = optuna.trial.Trial(study, self.spec["trial_id"])
        return self._trial

    def prune(self, metrics: dict, step: int, accelerator) -> StopReason | None:
        """Report this validation (main process); every process learns the pruner's answer together."""
        if self.spec is None:
            return None
        hopeless = False
        if accelerator.is_main_process:
            trial = self.trial()
            trial.report(float(metrics[self.spec["objective"]]), step)
            hopeless = trial.should_prune()
        if not any_process(accelerator, hopeless)[0]:
            return None
        return StopReason(
            StopKind.PRUNED,
            f"pruned at step {step}: the sweep's {self.spec['pruner']} pruner found its validation "
            f"{self.spec['objective'].replace('_', ' ')} hopeless",
        )
