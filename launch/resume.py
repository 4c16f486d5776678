"""Where a session of a run starts: the settings (a run remembers its own), the checkpoint it
continues from, and whether those settings still allow an exact continuation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt
from .config import TrainConfig, for_next_session, replace_paths, resume_changes, saved_run_config, smoke_config
from .errors import UserError


def session_config(defaults: TrainConfig, given: dict, smoke: bool = False) -> TrainConfig:
    """The run's settings: on --resume, those the run was started with; else the recipe's (or the
    smoke run's). Then the flags given on the command line (`given`, by dotted name), and only those."""
    base = smoke_config(defaults) if smoke else defaults
    if given.get("resume"):
        run_dir = (
            Path(given.get("output_dir", base.output_dir))
            if given["resume"] == "auto"
            else ckpt.run_dir_of(Path(given["resume"]))
        )
        saved = saved_run_config(run_dir)
        base = for_next_session(saved, defaults) if saved else base
    return replace_paths(base, given)


@dataclass(frozen=True)
class StartingPoint:
    checkpoint: Path | None  # None: from scratch
    finished: str | None = None  # why the run already ended, when it has: nothing to train


def starting_point(cfg: TrainConfig, log=print) -> StartingPoint:
    """The checkpoint this session continues from (--resume), after checking the settings against
    the run's saved ones; logs (on every process) when --resume auto finds nothing yet, or finds the
    run complete."""
    resume_from = ckpt.resolve_resume(cfg.resume, Path(cfg.output_dir)) if cfg.resume else None
    if cfg.resume == "auto" and resume_from is None:
        log(f"resume: no checkpoint under {ckpt.checkpoints_dir(Path(cfg.output_dir))} yet, starting from scratch")
    if resume_from is None:
        return StartingPoint(None)
    finished = ckpt.read_trainer_state(resume_from).get("finished")
    if finished:
        log(
            f"resume: the run in {cfg.output_dir} is complete ({finished}, {resume_from.name}); nothing to do. "
            "Its results are in summary.json; to train again, use a new --output-dir"
        )
        return StartingPoint(resume_from, finished)
    check_resume(cfg, resume_from, log)
    return StartingPoint(resume_from)


def check_resume(cfg: TrainConfig, resume_from: Path, log=print) -> None:
    """Compare the settings with those the run was started with: refuse what breaks exact
    continuation (unless --allow-changes), warn about what changes the run from here on."""
    saved = saved_run_config(ckpt.run_dir_of(resume_from))
    if saved is None:
        return
    changes = resume_changes(saved, cfg)
    if changes["fixed"] and not cfg.allow_changes:
        raise UserError(
            f"--resume with changed settings the run cannot continue exactly with ({'; '.join(changes['fixed'])}); "
            "drop those flags, add --allow-changes to accept them, or start a new --output-dir"
        )
    for change in changes["fixed"] + changes["warn"]:
        log(f"resume: warning: {change}; the run continues with the new value")
