"""gpt_core: the GPT model, its tokenizer and generation, in plain PyTorch (no training framework)."""

from .config import PRESETS, ConfigError, GPTConfig, get_preset
from .fused import IGNORE_INDEX
from .generate import GenerationError, generate, generate_stream
from .model import GPT, KVCache
from .tokenizer import EOT_ID, Tokenizer, get_tokenizer
from .weights import CheckpointError, load_pretrained, save_pretrained, save_state_dict

__all__ = [
    "GPT", "GPTConfig", "KVCache", "PRESETS", "get_preset", "ConfigError", "IGNORE_INDEX",
    "Tokenizer", "get_tokenizer", "EOT_ID", "generate", "generate_stream", "GenerationError",
    "save_pretrained", "save_state_dict", "load_pretrained", "CheckpointError",
]
