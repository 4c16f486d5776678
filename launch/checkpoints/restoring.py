"""Restoring a run from a step checkpoint: its files checked, its model config and tokenizer
compared with the run's, then Accelerate's state and our weights loaded; anything unreadable is one
line naming an older checkpoint to use instead."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from gpt_core import GPT, CheckpointError, GPTConfig, Tokenizer
from gpt_core.errors import first_line
from gpt_core.weights import CONFIG_NAME, WEIGHTS_NAME
from launch.errors import UserError

from .folders import STATE_NAME, checkpoint_components, step_checkpoints
from .weights import check_tokenizer


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
    """The trainer's state (step, epoch, tokens, precision, how it ended) saved in a checkpoint, or {}
    when it cannot be read (read_checkpoint says why)."""
    try:
        saved = json.loads((Path(path) / STATE_NAME).read_text())
        return checkpoint_components(saved)["trainer"] if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        return {}


def check_resumable(path: Path) -> None:
    """A step checkpoint's files are all there, and each small file or file header reads: checked
    before any data or model work, so a truncated file is one line, not a failure minutes later."""
    for needed in (STATE_NAME, CONFIG_NAME, "state"):
        if not (path / needed).exists():
            raise UserError(
                f"{path} is not a resumable checkpoint ({needed} is missing); pass a checkpoints/step-N folder"
            )
    unreadable = next(_unreadable_files(path), None)
    if unreadable:
        raise CheckpointError(
            f"{path} is corrupt ({unreadable[0]}: {unreadable[1]}); resume from an older step-N folder"
        )


def _unreadable_files(path: Path):
    """(file, why) for each file of the checkpoint that cannot be what it should: the trainer state and
    model config as JSON, the weights' header (it covers the whole file), torch's files as whole zips."""
    import zipfile

    from safetensors import safe_open

    try:
        if not isinstance(json.loads((path / STATE_NAME).read_text()), dict):
            yield STATE_NAME, "not a JSON object"
    except (OSError, ValueError) as e:
        yield STATE_NAME, first_line(e)
    try:
        GPTConfig.load(path / CONFIG_NAME)
    except (ValueError, OSError) as e:
        yield CONFIG_NAME, first_line(e)
    if (path / WEIGHTS_NAME).exists():  # DeepSpeed and FSDP keep their own shards under state/
        try:
            with safe_open(str(path / WEIGHTS_NAME), "pt") as weights:
                weights.keys()
        except Exception as e:  # safetensors' own error type, or an OSError
            yield WEIGHTS_NAME, first_line(e)
    for file in sorted((path / "state").glob("*")):
        if file.suffix in (".bin", ".pt", ".pth") and file.is_file() and not zipfile.is_zipfile(file):
            yield f"state/{file.name}", "not a whole torch file (truncated?)"


def read_checkpoint(path: Path, config: GPTConfig, tokenizer: Tokenizer) -> dict:
    """The saved state of a checkpoint that check_resumable passed, after checking it fits the model
    being trained."""
    saved = GPTConfig.load(path / CONFIG_NAME)
    state = json.loads((path / STATE_NAME).read_text())
    if saved != config:
        diff = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items() if getattr(config, k) != v}
        raise UserError(
            f"{path} was trained with a different model config (checkpoint vs now: {diff}); "
            "use the same --preset/options, or start a new --output-dir"
        )
    check_tokenizer(path, tokenizer, "resume with the run's own (drop --tokenizer), or start a new --output-dir")
    return state


def saved_process_count(path: Path) -> int:
    """How many processes trained the run that saved this checkpoint: each saves its own RNG state."""
    return len(list((Path(path) / "state").glob("random_states_*.pkl"))) or 1


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
    same_processes = saved_process_count(path) == accelerator.num_processes
    try:
        # Accelerate skips an unreadable RNG file silently, and the resume would then not be exact.
        # (Under another process count it is not exact anyway: the caller draws fresh streams.)
        if same_processes and "torch_manual_seed" not in load(rng_file):
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
