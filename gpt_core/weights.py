"""Model weights on disk: `model.safetensors` + `config.json` in one folder.

safetensors holds tensors only, so loading a model never executes code from the file (unlike a
pickle).  Any folder written by `save_pretrained` loads with `load_pretrained` and plain PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file

from .config import ConfigError, GPTConfig
from .model import GPT

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A weights folder that cannot be loaded; the message names the file and the fix."""


def save_state_dict(state_dict: dict, config: GPTConfig, folder: str | Path) -> None:
    """Write weights + config. The tied head is the embedding, so it is stored once, under embed.weight."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / CONFIG_NAME)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items() if k != "head.weight"}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def save_pretrained(model: GPT, folder: str | Path) -> None:
    save_state_dict(model.state_dict(), model.config, folder)


def load_pretrained(folder: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    folder = Path(folder)
    weights, config_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    for needed in (config_file, weights):
        if not needed.is_file():
            raise CheckpointError(
                f"{needed} is missing; point at a folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(a run's checkpoints/best or checkpoints/step-N)"
            )
    try:
        config = GPTConfig.load(config_file)
    except ConfigError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    model = GPT(config)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{weights} is corrupt or does not match {config_file} ({first_line}); use another checkpoint or retrain"
        ) from None
    # The tied head is stored once under the embedding's name, so it may show up as "missing".
    missing = [m for m in missing if m != "head.weight"]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit the model in {config_file}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model
