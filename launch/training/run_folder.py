"""A run's folder: what a run writes there, whether a folder already holds a run (only --resume or
an explicit --overwrite may use it), and checking it can be written before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from launch.checkpoints.folders import checkpoints_dir
from launch.errors import UserError, check_writable, write_failure
from launch.settings.config import RUN_CONFIG_NAME, TrainConfig
from launch.tracking.summary import SUMMARY_NAME
from launch.tracking.trackers import METRICS_NAME, TRACKER_NAME

# What a run writes into its folder: what makes a folder "hold a run", and what --overwrite deletes.
RUN_ARTEFACTS = (
    RUN_CONFIG_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    "checkpoints",
    "curves.png",
    "report.html",
    "report.md",
    "wandb",
    "wandb_report.json",
    TRACKER_NAME,
)


def check_run_dir(run_dir: Path, create: bool = False) -> None:
    """Fail early, in one line, when the run folder cannot be made or written (a path under a file, a
    read-only folder or checkpoints/); it is created only once the data and model are ready, so a
    failed start leaves no empty folder."""
    check_writable(run_dir, "--output-dir")
    checkpoints = checkpoints_dir(run_dir)
    if checkpoints.is_dir() and (failure := write_failure(checkpoints)):
        raise UserError(
            f"cannot write in {checkpoints} ({failure.strerror}); make it writable, or choose another --output-dir"
        )
    if create:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot create the run folder {run_dir} ({e.strerror}); choose another --output-dir"
            ) from None


def holds_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_ARTEFACTS)


def claim_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """A new run never mixes with an old one: refused in a folder that holds a run, unless told to
    --overwrite it (then the first process deletes the old run's files, and nothing else there)."""
    if not holds_run(run_dir):
        return
    if not cfg.overwrite:
        raise UserError(
            f"{run_dir} already holds a run; continue it with --resume auto --output-dir {run_dir}, start a "
            "new one with another --output-dir, or add --overwrite to delete it and start again"
        )
    if os.environ.get("RANK", "0") == "0":
        for name in (*RUN_ARTEFACTS, cfg.project):  # the TensorBoard logs go in a folder named after the project
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
