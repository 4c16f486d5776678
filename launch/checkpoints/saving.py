"""Checkpoints that are never half-written.

    <run>/checkpoints/step-0000120/   model.safetensors, config.json   (loadable by gpt_core alone)
                                      tokenizer.json                   (a trained tokenizer; none: GPT-2 BPE)
                                      trainer_state.json               (step, epoch, position, early stopping)
                                      state/                           (Accelerate: optimizer, scaler, RNG;
                                                                        DeepSpeed: its engine shards)
    <run>/checkpoints/best/           model.safetensors, config.json, trainer_state.json

The weights are stored once, in model.safetensors (Accelerate's own copy is not written).
Each folder is written under a temporary name and renamed into place once complete, so a crash or
SIGKILL mid-write leaves at worst a `.tmp-*` folder that nothing ever picks. Nothing here is read
with pickle: weights are safetensors, our state is JSON, and Accelerate loads its files with
`torch.load(weights_only=True)` (we register no custom objects, the one path where it would not).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from gpt_core import GPTConfig, Tokenizer, save_state_dict
from gpt_core.errors import first_line
from gpt_core.files import write_json
from launch.errors import UserError, is_disk_full
from launch.runtime.processes import fault_point

from .folders import STATE_NAME, checkpoints_dir, step_checkpoints


class ModelSpec(NamedTuple):
    """What is saved beside the weights so that they load alone: the model's config and its tokenizer."""

    config: GPTConfig
    tokenizer: Tokenizer


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete `.tmp-*` folders a killed save left behind (never read; safe to delete). Main process only."""
    root = checkpoints_dir(run_dir)
    stale = sorted(p for p in root.glob(".tmp-*") if p.is_dir()) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in stale]


def store_weights_once(accelerator) -> None:
    """Keep Accelerate from writing a second copy of the weights into `state/`.

    Our `model.safetensors` beside it already holds them (gathered, loadable by gpt_core alone), so
    the pre-save hook drops Accelerate's copy and the pre-load hook leaves loading to
    `load_training_state`. DeepSpeed's own engine files are untouched: they never pass through here.
    Under FSDP the sharded model files in `state/` are what resumes (a full copy does not load into
    sharded parameters), so both copies are kept.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


# safetensors and torch.save report a failed write as their own error types, with the OS text inside.
# torch's zip writer reports a short write (a full disk, a file-size limit) as "unexpected pos".
NO_SPACE_TEXT = (
    "No space left",
    "File too large",
    "Disk quota",
    "os error 28",
    "os error 27",
    "failed writing file",
    "unexpected pos",
)


def _is_write_failure(e: Exception) -> bool:
    return isinstance(e, OSError) or any(text in str(e) for text in NO_SPACE_TEXT)


def _disk_error(e: Exception, target: Path, run_dir: Path) -> UserError:
    no_space = is_disk_full(e) or any(t in str(e) for t in NO_SPACE_TEXT)
    why = "no space left: the disk, quota or file-size limit is full" if no_space else first_line(e)
    fix = f"free space under {target.parent}" if no_space else f"make {target.parent} writable"
    previous = step_checkpoints(run_dir)
    if previous:
        kept = f"the previous checkpoint {previous[-1].name} is intact - {fix} and resume with --resume auto"
    else:
        kept = f"no earlier checkpoint exists, so the run restarts from scratch - {fix} and run again"
    return UserError(f"could not write checkpoint {target.name} ({why}); {kept}")


def save_checkpoint(accelerator, model, spec: ModelSpec, run_dir: Path, trainer_state: dict, keep_last: int) -> Path:
    """All processes call this (DeepSpeed writes a shard per rank). Returns the new folder."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{trainer_state['trainer']['step']:07d}"
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
            save_state_dict(state_dict, spec.config, tmp, spec.tokenizer)
            fault_point("kill-while-saving")
            write_json(tmp / STATE_NAME, trainer_state, sort_keys=True)
            _fsync_tree(tmp)
    except Exception as e:
        if not _is_write_failure(e):
            raise
        failure = e
    accelerator.wait_for_everyone()
    if failure is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(failure, final, run_dir) from None
    if accelerator.is_main_process:
        if final.exists():  # the same step saved by an earlier session (a resumed run that paused again)
            shutil.rmtree(final)
        os.rename(tmp, final)
        for old in step_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_best(accelerator, model, spec: ModelSpec, run_dir: Path, trainer_state: dict) -> None:
    """Replace checkpoints/best with the current weights. If a crash strikes between the two renames,
    `best.old` still holds the previous best and `find_best` falls back to it."""
    root = checkpoints_dir(run_dir)
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    best, tmp, old = root / "best", root / ".tmp-best", root / "best.old"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_state_dict(state_dict, spec.config, tmp, spec.tokenizer)
        write_json(tmp / STATE_NAME, trainer_state, sort_keys=True)
        _fsync_tree(tmp)
    except Exception as e:
        if not _is_write_failure(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(e, best, run_dir) from None
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        os.rename(best, old)
    os.rename(tmp, best)
    shutil.rmtree(old, ignore_errors=True)
