"""gpt_core: the GPT model, its tokenizer and generation, in plain PyTorch (no training framework)."""

import importlib

from .config import PRESETS, ConfigError, GPTConfig, get_preset
from .tokenizer import EOT_ID, Tokenizer, get_tokenizer

# The torch-backed parts load on first use: a process that only tokenizes (the data preparation's
# worker processes) then never imports torch, which costs ~200 MB of memory per process. No
# submodule may share a name with what it exports (hence generation.py, not generate.py): importing
# a submodule sets the package attribute of its name, which would hide the function.
_LAZY = {
    "IGNORE_INDEX": "fused",
    "GPT": "model",
    "KVCache": "model",
    "GenerationError": "generation",
    "generate": "generation",
    "generate_stream": "generation",
    "CheckpointError": "weights",
    "load_pretrained": "weights",
    "save_pretrained": "weights",
    "save_state_dict": "weights",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in set(_LAZY.values()):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EOT_ID",
    "GPT",
    "IGNORE_INDEX",
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "GPTConfig",
    "GenerationError",
    "KVCache",
    "Tokenizer",
    "generate",
    "generate_stream",
    "get_preset",
    "get_tokenizer",
    "load_pretrained",
    "save_pretrained",
    "save_state_dict",
]
