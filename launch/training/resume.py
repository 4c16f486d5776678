"""Where a session of a run starts: the settings (a run remembers its own), the checkpoint it
continues from, and whether those settings still allow an exact continuation."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from launch.checkpoints.folders import checkpoints_dir, run_dir_of, step_checkpoints
from launch.checkpoints.restoring import (
    check_resumable,
    read_checkpoint,
    read_trainer_state,
    resolve_resume,
    saved_process_count,
)
from launch.errors import UserError
from launch.runtime.processes import launched_engine, launched_processes
from launch.settings.config import RUN_CONFIG_NAME, TrainConfig, saved_run_config, smoke_config
from launch.settings.fields import flag_of, get_path, leaf_fields, replace_paths
from launch.tracking.summary import SUMMARY_NAME

from .run_folder import claim_folder


def session_config(defaults: TrainConfig, given: dict, smoke: bool = False) -> TrainConfig:
    """The run's settings: on --resume, those the run was started with; else the recipe's (or the
    smoke run's). Then the flags given on the command line (`given`, by dotted name), and only those."""
    base = smoke_config(defaults) if smoke else defaults
    if given.get("resume"):
        run_dir = (
            Path(given.get("output_dir", base.output_dir))
            if given["resume"] == "auto"
            else run_dir_of(Path(given["resume"]))
        )
        saved = saved_run_config(run_dir)
        if saved is None and not given.get("allow_changes") and step_checkpoints(run_dir):
            raise UserError(
                f"{run_dir / RUN_CONFIG_NAME} is missing, so this run's settings (data, model, batch, schedule) are "
                "unknown; put it back, or resume with every flag the run was started with plus --allow-changes"
            )
        base = for_next_session(saved, defaults) if saved else base
    return replace_paths(base, given)


@dataclass(frozen=True)
class StartingPoint:
    checkpoint: Path | None  # None: from scratch
    finished: str | None = None  # why the run already ended, when it has
    end_only: bool = False  # finished, but its end (test, samples, summary) was cut short: redo only that


def starting_point(cfg: TrainConfig, log=print) -> StartingPoint:
    """The checkpoint this session continues from (--resume), after checking the settings against
    the run's saved ones; logs (on every process) when --resume auto finds nothing yet, or finds the
    run complete. Everything here is checked before any data work."""
    run_dir = Path(cfg.output_dir)
    if not cfg.resume:
        claim_folder(run_dir, cfg)
        return StartingPoint(None)
    resume_from = resolve_resume(cfg.resume, run_dir)
    if resume_from is None:
        log(f"resume: no checkpoint under {checkpoints_dir(run_dir)} yet, starting from scratch")
        return StartingPoint(None)
    check_resumable(resume_from)
    finished = read_trainer_state(resume_from).get("finished")
    if finished and (run_dir_of(resume_from) / SUMMARY_NAME).is_file():
        log(
            f"resume: the run in {cfg.output_dir} is complete ({finished}, {resume_from.name}); nothing to do. "
            "Its results are in summary.json; to train again, use a new --output-dir"
        )
        return StartingPoint(resume_from, finished)
    check_resume(cfg, resume_from, log)
    if finished:
        log(
            f"resume: the run finished ({finished}) but was stopped before its summary was written: "
            f"testing checkpoints/best again, with the samples, curves and summary.json"
        )
    return StartingPoint(resume_from, finished, end_only=bool(finished))


def check_resume(cfg: TrainConfig, resume_from: Path, log=print) -> None:
    """Compare the settings with those the run was started with: refuse what breaks exact
    continuation (unless --allow-changes), warn about what changes the run from here on."""
    saved = saved_run_config(run_dir_of(resume_from))
    changes = resume_changes(saved, cfg) if saved else {"fixed": [], "warn": []}
    if changes["fixed"] and not cfg.allow_changes:
        raise UserError(
            f"--resume with changed settings the run cannot continue exactly with ({'; '.join(changes['fixed'])}); "
            "drop those flags, add --allow-changes to accept them, or start a new --output-dir"
        )
    read_checkpoint(resume_from, cfg.model_config(), cfg.data.load_tokenizer())  # its small files fit this run
    for change in changes["fixed"] + changes["warn"]:
        log(f"resume: warning: {change}; the run continues with the new value")


def for_next_session(saved: TrainConfig, defaults: TrainConfig) -> TrainConfig:
    """A run's saved settings, with the ones that belong to a single session back at their defaults."""
    return replace_paths(
        saved,
        {
            dotted: get_path(defaults, dotted)
            for dotted, f, _ in leaf_fields(TrainConfig)
            if f.metadata["on_resume"] == "session"
        },
    )


def _same_tokenizer(before, after) -> bool:
    """Two data settings name the same tokenizer (its content, wherever the file is)."""
    try:
        return before.load_tokenizer().fingerprint == after.load_tokenizer().fingerprint
    except ValueError:  # the saved file is gone: not known to be the same
        return False


def resume_changes(saved: TrainConfig, now: TrainConfig) -> dict[str, list[str]]:
    """What differs between a run's saved settings and these, grouped by resume policy."""
    grouped: dict[str, list[str]] = {"fixed": [], "warn": [], "free": [], "session": []}
    for dotted, f, _ in leaf_fields(TrainConfig):
        before, after = get_path(saved, dotted), get_path(now, dotted)
        if before != after and not (dotted == "data.tokenizer" and _same_tokenizer(saved.data, now.data)):
            grouped[f.metadata["on_resume"]].append(f"{flag_of(f)} {before!r} -> {after!r}")
    return grouped


def for_process_count(cfg: TrainConfig, checkpoint: Path, log=print) -> TrainConfig:
    """The settings that continue a checkpoint saved by another number of processes (a preempted
    8-GPU job back on 4): gradient accumulation takes up the difference, so the tokens per optimizer
    step, the schedule and the step count stay as planned. Refused in one line where it cannot:
    the accumulation does not divide, or the epoch's position falls between two processes' batches."""
    saved, now = saved_process_count(checkpoint), launched_processes()
    if saved == now:
        return cfg
    engine = launched_engine() or ("DeepSpeed" if (checkpoint / "state" / "pytorch_model").is_dir() else None)
    if engine:  # its states are one per process
        raise UserError(
            f"{checkpoint} was saved by {saved} process(es) and this launch has {now}: {engine} keeps a shard of the "
            f"model and optimizer per process, which cannot be dealt out again here; launch {saved} process(es)"
        )
    rows = cfg.grad_accum * saved  # micro-batches per optimizer step, all processes together
    position = read_trainer_state(checkpoint).get("batch_in_epoch", 0) * saved
    if rows % now or position % now:
        raise UserError(
            f"{checkpoint} was saved by {saved} process(es) and this launch has {now}: its {rows} micro-batches per "
            f"optimizer step (--grad-accum {cfg.grad_accum} x {saved}) cannot be shared evenly by {now}; launch "
            f"{saved} process(es), or a number of processes that divides {rows}"
        )
    if os.environ.get("RANK", "0") != "0":
        log = lambda _: None
    log(
        f"resume: the checkpoint was saved by {saved} process(es), this launch has {now}: --grad-accum "
        f"{cfg.grad_accum} -> {rows // now} keeps the tokens per optimizer step, the schedule and the step count; "
        "the continuation is no longer bit-exact (other data shards per process, fresh random streams)"
    )
    return dataclasses.replace(cfg, grad_accum=rows // now)
