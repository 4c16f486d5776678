"""Weights that come from elsewhere: the tokenizer they were trained with, and `--init-from`
(a run, a checkpoint, an export or a transformers folder) copied into a new model."""

from __future__ import annotations

from pathlib import Path

from gpt_core import GPTConfig, Tokenizer, load_pretrained, load_tokenizer, tokenizer_of
from gpt_core.tokenizer import GPT2_VOCAB_SIZE, TOKENIZER_NAME
from gpt_core.weights import read_config
from launch.errors import UserError

from .folders import resolve_weights


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


# Settings of a model that only shape its training, not the function its weights compute.
TRAINING_ONLY = ("dropout", "attention_dropout", "init_std")


def check_initial_weights(source: str, config: GPTConfig, tokenizer: str | None, shape_flags: list[str]) -> Path:
    """--init-from's weights folder, after checking from its small files alone (config.json and
    tokenizer.json, before any data or model work) that its weights fit the run: the tokenizer
    (`tokenizer`, the run's --tokenizer) and the architecture `config` (`shape_flags`: the flags the
    user gave that chose that architecture)."""
    folder = resolve_weights(source)
    theirs = read_config(folder)[0]
    weights_tokenizer(folder, theirs.vocab_size, tokenizer)
    ours = config.to_dict()
    differs = {
        k: (getattr(theirs, k), v)
        for k, v in ours.items()
        if k not in (*TRAINING_ONLY, "vocab_size") and getattr(theirs, k) != v
    }
    if differs:
        listed = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differs.items())
        take_its_own = f"drop {'/'.join(shape_flags)} to take its own, or " if shape_flags else ""
        raise UserError(
            f"--init-from {source} is another architecture ({listed}); {take_its_own}start from weights of this shape"
        )
    return folder


def load_initial_weights(model, source: str, tokenizer: str | None, shape_flags: list[str]) -> Path:
    """--init-from: copy the weights of `source` (a run, a checkpoint, an export or a transformers
    folder) into `model`, once they are checked to fit; returns the folder read."""
    folder = check_initial_weights(source, model.config, tokenizer, shape_flags)
    model.load_state_dict(load_pretrained(folder).state_dict())
    return folder


def init_weights_config(source: str) -> GPTConfig:
    """The model config of --init-from's weights (read without loading them)."""
    return read_config(resolve_weights(source))[0]


def init_weights_tokenizer(source: str) -> str | None:
    """The tokenizer file --init-from's weights were trained with; None for GPT-2 BPE."""
    path = tokenizer_of(resolve_weights(source)).path
    return str(path) if path else None
