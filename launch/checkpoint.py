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

import json
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file

from gpt_core import (
    GPT,
    CheckpointError,
    GPTConfig,
    Tokenizer,
    load_pretrained,
    load_tokenizer,
    save_state_dict,
    tokenizer_of,
)
from gpt_core.tokenizer import GPT2_VOCAB_SIZE, TOKENIZER_NAME
from gpt_core.weights import CONFIG_NAME, WEIGHTS_NAME

from .errors import UserError, first_line, is_disk_full
from .runtime import fault_point

STATE_NAME = "trainer_state.json"
STEP_DIR = re.compile(r"step-(\d+)")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder (step-N, best) belongs to."""
    return Path(checkpoint).parent.parent


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary folders never match the pattern)."""
    root = checkpoints_dir(run_dir)
    found = [p for p in root.glob("step-*") if p.is_dir() and STEP_DIR.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))


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


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


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


def save_checkpoint(
    accelerator, model, shape: tuple[GPTConfig, Tokenizer], run_dir: Path, trainer_state: dict, keep_last: int
) -> Path:
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
            save_state_dict(state_dict, shape[0], tmp, shape[1])
            fault_point("kill-while-saving")
            _write_json(tmp / STATE_NAME, trainer_state)
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


def save_best(accelerator, model, shape: tuple[GPTConfig, Tokenizer], run_dir: Path, trainer_state: dict) -> None:
    """Replace checkpoints/best with the current weights. If a crash strikes between the two renames,
    `best.old` still holds the previous best and `find_best` falls back to it."""
    root = checkpoints_dir(run_dir)
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    best, tmp, old = root / "best", root / ".tmp-best", root / "best.old"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_state_dict(state_dict, shape[0], tmp, shape[1])
        _write_json(tmp / STATE_NAME, trainer_state)
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


def read_trainer_state(path: Path) -> dict:
    """The trainer state saved in a checkpoint, or {} when it cannot be read (read_checkpoint says why)."""
    try:
        return json.loads((Path(path) / STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}


def check_resumable(path: Path) -> None:
    """A step checkpoint's files are all there (whether they load is read_checkpoint's to say)."""
    for needed in (STATE_NAME, CONFIG_NAME, "state"):
        if not (path / needed).exists():
            raise UserError(
                f"{path} is not a resumable checkpoint ({needed} is missing); pass a checkpoints/step-N folder"
            )


def read_checkpoint(path: Path, config: GPTConfig, tokenizer: Tokenizer) -> dict:
    """The trainer state of a resumable checkpoint, after checking it fits the model being trained."""
    check_resumable(path)
    try:
        saved = GPTConfig.load(path / CONFIG_NAME)
        state = json.loads((path / STATE_NAME).read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt ({first_line(e)}); resume from an older step-N folder") from None
    if saved != config:
        diff = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items() if getattr(config, k) != v}
        raise UserError(
            f"{path} was trained with a different model config (checkpoint vs now: {diff}); "
            "use the same --preset/options, or start a new --output-dir"
        )
    check_tokenizer(path, tokenizer, "resume with the run's own (drop --tokenizer), or start a new --output-dir")
    return state


def check_tokenizer(folder: Path, tokenizer: Tokenizer, fix: str) -> None:
    """The weights in `folder` were trained with `tokenizer`: else one line naming both, and `fix`."""
    own = tokenizer_of(folder)
    if own.fingerprint != tokenizer.fingerprint:
        raise UserError(f"{folder} was trained with {own.describe()}, not with {tokenizer.describe()}; {fix}")


def weights_tokenizer(folder: Path, vocab_size: int, given: str | None = None) -> Tokenizer:
    """The tokenizer of the weights in `folder` (its tokenizer.json, else GPT-2 BPE); a `given`
    --tokenizer must be that same one. Weights that carry none and are not GPT-2-sized need `given`."""
    if given is None:
        chosen = tokenizer_of(folder)
    else:
        chosen = load_tokenizer(given)
        if (folder / TOKENIZER_NAME).is_file() or vocab_size == GPT2_VOCAB_SIZE:
            check_tokenizer(folder, chosen, "drop --tokenizer to use its own")
    if chosen.vocab_size != vocab_size:
        raise UserError(
            f"{folder} holds a {vocab_size:,}-token model but no tokenizer.json, and {chosen.describe()} does not "
            "fit it; pass the tokenizer it was trained with: --tokenizer PATH"
        )
    return chosen


def plain_model(accelerator, model) -> GPT:
    """The GPT itself under whatever wraps it: DDP, and a torch.compile wrapper (Accelerate makes one
    when launched with a dynamo backend), whose state dict names every key `_orig_mod.<name>`."""
    inner = accelerator.unwrap_model(model)
    return getattr(inner, "_orig_mod", inner)


def load_training_state(accelerator, model, path: Path) -> None:
    """Optimizer, scaler and RNG states through Accelerate; the weights from our own safetensors file
    (DeepSpeed and FSDP load their own sharded files). Anything unreadable is a one-line CheckpointError."""
    from accelerate.utils import DistributedType
    from accelerate.utils.other import load

    rng_file = path / "state" / f"random_states_{accelerator.process_index}.pkl"
    try:
        # Accelerate skips an unreadable RNG file silently, and the resume would then not be exact.
        if "torch_manual_seed" not in load(rng_file):
            raise ValueError("no torch RNG state in it")
        if accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            # safetensors knows "cpu" but not "cpu:0", the device of each rank in a multi-process CPU run.
            device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
            weights = load_file(str(path / WEIGHTS_NAME), device=device)
            weights["head.weight"] = weights["embed.weight"]  # tied: stored once
            plain_model(accelerator, model).load_state_dict(weights)
        accelerator.load_state(str(path / "state"))
    except Exception as e:
        raise CheckpointError(
            f"{path} could not be loaded ({type(e).__name__}: {first_line(e)}); it is corrupt or not ours - "
            "resume from an older checkpoints/step-N folder"
        ) from None


def resolve_weights(path: str | None) -> Path:
    """A weights folder from a folder that holds model.safetensors, a run folder (its best), or the
    newest run under ./runs when no path is given."""
    if path is None:
        runs = (
            sorted((p for p in Path("runs").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
            if Path("runs").is_dir()
            else []
        )
        runs = [r for r in runs if find_best(r) or step_checkpoints(r)]
        if not runs:
            raise UserError("no checkpoint given and no run under ./runs; pass a run folder or a checkpoint folder")
        path = str(runs[-1])
    folder = Path(path)
    if (folder / WEIGHTS_NAME).is_file():
        return folder
    if not folder.exists():
        raise UserError(f"{folder} does not exist; pass a run folder (--output-dir of a run) or a checkpoint folder")
    best = find_best(folder)
    steps = step_checkpoints(folder)
    if best or steps:
        return best or steps[-1]
    raise UserError(f"{folder} holds no model.safetensors and no checkpoints/; pass a run or checkpoint folder")


# Settings of a model that only shape its training, not the function its weights compute.
TRAINING_ONLY = ("dropout", "attention_dropout", "init_std")


def load_initial_weights(model, source: str, tokenizer: Tokenizer) -> Path:
    """--init-from: copy the weights of `source` (a run, a checkpoint, an export or a transformers
    folder) into `model`, after checking they are the same architecture and tokenizer; returns the folder read."""
    folder = resolve_weights(source)
    check_tokenizer(folder, tokenizer, "drop --tokenizer to take its own, or start from weights trained with it")
    initial = load_pretrained(folder)
    ours, theirs = model.config.to_dict(), initial.config.to_dict()
    differs = {k: (theirs[k], v) for k, v in ours.items() if k not in TRAINING_ONLY and theirs[k] != v}
    if differs:
        listed = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differs.items())
        raise UserError(
            f"--init-from {source} is another architecture ({listed}); drop --preset/--model-config/"
            "--norm to take its own, or start from weights of this shape"
        )
    model.load_state_dict(initial.state_dict())
    return folder
