"""gpt_core: the GPT model, its tokenizer and generation, in plain PyTorch (no training framework).

The names below load on first use (PEP 562), so `gpt_core.errors` and `gpt_core.files`, the helpers
launch's data workers share, import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "config": ("PRESETS", "ConfigError", "GPTConfig", "get_preset"),
    "fused": ("IGNORE_INDEX",),
    "generation": ("GenerationError", "generate", "generate_stream"),
    "model": ("GPT", "KVCache"),
    "tokenizer": (
        "EOT_ID",
        "GPT2_VOCAB_SIZE",
        "Tokenizer",
        "TokenizerError",
        "get_tokenizer",
        "load_tokenizer",
        "tokenizer_of",
    ),
    "weights": ("CheckpointError", "load_pretrained", "save_hf", "save_pretrained", "save_state_dict"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'gpt_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and editors see
    from .config import (
        PRESETS as PRESETS,
    )
    from .config import (
        ConfigError as ConfigError,
    )
    from .config import (
        GPTConfig as GPTConfig,
    )
    from .config import (
        get_preset as get_preset,
    )
    from .fused import (
        IGNORE_INDEX as IGNORE_INDEX,
    )
    from .generation import (
        GenerationError as GenerationError,
    )
    from .generation import (
        generate as generate,
    )
    from .generation import (
        generate_stream as generate_stream,
    )
    from .model import (
        GPT as GPT,
    )
    from .model import (
        KVCache as KVCache,
    )
    from .tokenizer import (
        EOT_ID as EOT_ID,
    )
    from .tokenizer import (
        GPT2_VOCAB_SIZE as GPT2_VOCAB_SIZE,
    )
    from .tokenizer import (
        Tokenizer as Tokenizer,
    )
    from .tokenizer import (
        TokenizerError as TokenizerError,
    )
    from .tokenizer import (
        get_tokenizer as get_tokenizer,
    )
    from .tokenizer import (
        load_tokenizer as load_tokenizer,
    )
    from .tokenizer import (
        tokenizer_of as tokenizer_of,
    )
    from .weights import (
        CheckpointError as CheckpointError,
    )
    from .weights import (
        load_pretrained as load_pretrained,
    )
    from .weights import (
        save_hf as save_hf,
    )
    from .weights import (
        save_pretrained as save_pretrained,
    )
    from .weights import (
        save_state_dict as save_state_dict,
    )
