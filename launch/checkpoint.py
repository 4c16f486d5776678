"""Checkpoints that are never half-written.

    <run>/checkpoints/step-0000120/   model.safetensors, config.json   (loadable by gpt_core alone)
                                      trainer_state.json               (step, epoch, position, early stopping)
                                      state/                           (Accelerate: optimizer, scaler, RNG, ...)
    <run>/checkpoints/best/           model.safetensors, config.json, trainer_state.json

Each folder is written under a temporary name and renamed into place once complete, so a crash or
SIGKILL mid-write leaves at worst a `.tmp-*` folder that nothing ever picks. Nothing here is read
with pickle: weights are safetensors, our state is JSON, and Accelerate loads its files with
`torch.load(weights_only=True)` (we register no custom objects, the one path where it would not).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

from gpt_core import CheckpointError, GPTConfig, save_state_dict
from gpt_core.weights import CONFIG_NAME, WEIGHTS_NAME

from .errors import UserError

STATE_NAME = "trainer_state.json"
STEP_DIR = re.compile(r"step-(\d+)")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary folders never match the pattern)."""
    root = checkpoints_dir(run_dir)
    found = [p for p in root.glob("step-*") if p.is_dir() and STEP_DIR.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# safetensors and torch.save report a failed write as their own error types, with the OS text inside.
NO_SPACE_TEXT = ("No space left", "File too large", "Disk quota", "os error 28", "os error 27", "failed writing file")


def _is_write_failure(e: Exception) -> bool:
    return isinstance(e, OSError) or any(text in str(e) for text in NO_SPACE_TEXT)


def _disk_error(e: Exception, target: Path) -> UserError:
    no_space = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(t in str(e) for t in NO_SPACE_TEXT)
    why = "no space left: the disk, quota or file-size limit is full" if no_space else str(e).splitlines()[0]
    return UserError(
        f"could not write checkpoint {target.name} ({why}); the previous checkpoint is intact - free space "
        f"under {target.parent} and resume with --resume auto"
    )


def save_checkpoint(accelerator, model, config: GPTConfig, run_dir: Path, trainer_state: dict, keep_last: int) -> Path:
    """All processes call this (DeepSpeed writes a shard per rank). Returns the new folder."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{trainer_state['step']:07d}"
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # gathers ZeRO-3 shards onto the main process
    failure = None
    try:
        accelerator.save_state(str(tmp / "state"), safe_serialization=True)
        if accelerator.is_main_process:
            save_state_dict(state_dict, config, tmp)
            if os.environ.get("GPT_LAUNCH_FAULT") == "kill-while-saving":  # fault injection, for the tests only
                os.kill(os.getpid(), signal.SIGKILL)
            _write_json(tmp / STATE_NAME, trainer_state)
            _fsync_tree(tmp)
    except Exception as e:  # noqa: BLE001 - narrowed just below
        if not _is_write_failure(e):
            raise
        failure = e
    accelerator.wait_for_everyone()
    if failure is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(failure, final) from None
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. end of epoch right after a pause)
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in step_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_best(accelerator, model, config: GPTConfig, run_dir: Path, trainer_state: dict) -> None:
    """Replace checkpoints/best with the current weights. If a crash strikes between the two renames,
    `best.old` still holds the previous best and `find_best` falls back to it."""
    root = checkpoints_dir(run_dir)
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    best, tmp, old = root / "best", root / ".tmp-best", root / "best.old"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_state_dict(state_dict, config, tmp)
        _write_json(tmp / STATE_NAME, trainer_state)
        _fsync_tree(tmp)
    except Exception as e:  # noqa: BLE001 - narrowed just below
        if not _is_write_failure(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(e, best) from None
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        os.rename(best, old)
    os.rename(tmp, best)
    shutil.rmtree(old, ignore_errors=True)


def find_best(run_dir: Path) -> Path | None:
    root = checkpoints_dir(run_dir)
    for candidate in (root / "best", root / "best.old"):
        if (candidate / WEIGHTS_NAME).is_file():
            return candidate
    return None


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """`auto`: the newest complete checkpoint of this run (None if there is none yet); else a path."""
    if resume == "auto":
        found = step_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume {resume}: no such checkpoint folder; pass a checkpoints/step-N folder or 'auto'")
    return path


def read_checkpoint(path: Path, config: GPTConfig) -> dict:
    """The trainer state of a resumable checkpoint, after checking it fits the model being trained."""
    for needed in (STATE_NAME, CONFIG_NAME, "state"):
        if not (path / needed).exists():
            raise UserError(f"{path} is not a resumable checkpoint ({needed} is missing); pass a checkpoints/step-N folder")
    try:
        saved = GPTConfig.load(path / CONFIG_NAME)
        state = json.loads((path / STATE_NAME).read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt ({str(e).splitlines()[0]}); resume from an older step-N folder") from None
    if saved != config:
        diff = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items() if getattr(config, k) != v}
        raise UserError(
            f"{path} was trained with a different model config (checkpoint vs now: {diff}); "
            "use the same --preset/options, or start a new --output-dir"
        )
    return state


def load_training_state(accelerator, path: Path) -> None:
    try:
        accelerator.load_state(str(path / "state"))
    except Exception as e:  # noqa: BLE001 - torch/safetensors/deepspeed each raise their own types
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} could not be loaded ({type(e).__name__}: {first_line[:200]}); it is corrupt or not ours - "
            "resume from an older checkpoints/step-N folder"
        ) from None
