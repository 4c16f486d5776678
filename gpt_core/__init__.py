"""gpt_core: the GPT model, its tokenizer and generation, in plain PyTorch (no training framework)."""

from .config import PRESETS, ConfigError, GPTConfig, get_preset
from .fused import IGNORE_INDEX
from .generation import GenerationError, generate, generate_stream
from .model import GPT, KVCache
from .tokenizer import EOT_ID, GPT2_VOCAB_SIZE, Tokenizer, TokenizerError, get_tokenizer, load_tokenizer, tokenizer_of
from .weights import CheckpointError, load_pretrained, save_hf, save_pretrained, save_state_dict

__all__ = [
    "EOT_ID",
    "GPT",
    "GPT2_VOCAB_SIZE",
    "IGNORE_INDEX",
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "GPTConfig",
    "GenerationError",
    "KVCache",
    "Tokenizer",
    "TokenizerError",
    "generate",
    "generate_stream",
    "get_preset",
    "get_tokenizer",
    "load_pretrained",
    "load_tokenizer",
    "save_hf",
    "save_pretrained",
    "save_state_dict",
    "tokenizer_of",
]
