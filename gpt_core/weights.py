"""Model weights on disk: `model.safetensors` + `config.json` in one folder.

safetensors holds tensors only, so loading a model never executes code from the file (unlike a
pickle).  Any folder written by `save_pretrained` loads with `load_pretrained` and plain PyTorch,
and so does one in transformers' GPT-2 or OpenAI GPT format (`save_hf`, or `save_pretrained` of
transformers itself): the config.json says which (see hf.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file

from . import hf
from .config import ConfigError, GPTConfig, read_config_json
from .errors import first_line
from .model import GPT
from .tokenizer import Tokenizer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A weights folder that cannot be loaded; the message names the file and the fix."""


COMPILED_PREFIX = "_orig_mod."  # what a torch.compile wrapper puts before each of its module's keys


def plain_keys(state_dict: dict) -> dict:
    """The same tensors under the model's own names, whether `state_dict` came from the model or from
    a torch.compile wrapper around it (as Accelerate's get_state_dict returns it under dynamo)."""
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}


def save_state_dict(
    state_dict: dict, config: GPTConfig, folder: str | Path, tokenizer: Tokenizer | None = None
) -> None:
    """Write weights + config (+ the tokenizer, unless it is GPT-2 BPE). The tied head is the
    embedding, so it is stored once, under embed.weight. The names are the model's own, so a
    checkpoint is the same whether the run was compiled or not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / CONFIG_NAME)
    if tokenizer is not None:
        tokenizer.save(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in plain_keys(state_dict).items() if k != "head.weight"}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def save_pretrained(model: GPT, folder: str | Path, tokenizer: Tokenizer | None = None) -> None:
    save_state_dict(model.state_dict(), model.config, folder, tokenizer)


def save_hf(model: GPT, folder: str | Path, extra_config: dict | None = None) -> list[str]:
    """Write `model` as transformers' GPT-2 (pre-LN), OpenAI GPT (post-LN), Llama or Qwen3 (see
    hf.architecture): config.json and model.safetensors under their names, a tied matrix once.
    Returns what transformers will compute differently (hf.approximations), for the caller to say."""
    config = {**hf.hf_config(model.config), **(extra_config or {})}  # first: refuses what no class computes
    tensors = hf.to_hf(model.state_dict(), model.config, model.position_table())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return hf.approximations(model.config)


def read_config(folder: Path) -> tuple[GPTConfig, bool]:
    """The folder's model config, and whether it is in transformers' format."""
    config_file = folder / CONFIG_NAME
    try:
        data = read_config_json(config_file)
    except ConfigError as e:  # names the file and how to mend it
        raise CheckpointError(str(e)) from None
    try:
        if hf.is_hf_config(data):
            return hf.config_from_hf(data), True
        if "model_type" in data or "architectures" in data:
            found = ", ".join(data.get("architectures") or [str(data.get("model_type"))])
            readable = ", ".join(hf.READABLE)
            raise CheckpointError(
                f"{config_file}: a transformers {found} model, an architecture gpt_core does not read; use a "
                f"{readable} folder, or weights gpt_core saved"
            )
        return GPTConfig.from_dict(data), False
    except CheckpointError:
        raise
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_file}: {e}") from None


def load_pretrained(folder: str | Path, map_location: str | torch.device = "cpu") -> GPT:
    folder = Path(folder)
    weights, config_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    for needed in (config_file, weights):
        if not needed.is_file():
            raise CheckpointError(
                f"{needed} is missing; point at a folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(a run's checkpoints/best or checkpoints/step-N, or an exported model)"
            )
    config, in_hf_format = read_config(folder)
    if in_hf_format:
        return _load_hf(folder, config, map_location)
    model = GPT(config)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{weights} is corrupt or does not match {config_file} ({first_line(e)}); use another checkpoint or retrain"
        ) from None
    # The tied head is stored once under the embedding's name, so it may show up as "missing".
    missing = [m for m in missing if m != "head.weight"]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit the model in {config_file}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def _load_hf(folder: Path, config: GPTConfig, map_location) -> GPT:
    weights = folder / WEIGHTS_NAME
    try:
        state = hf.from_hf(load_file(str(weights), device=str(map_location)), config)
        model = GPT(config).to(map_location)
        model.load_state_dict(state)
    except (SafetensorError, OSError, KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"{weights} does not hold the model its config.json describes ({first_line(e)})"
        ) from None
    return model
