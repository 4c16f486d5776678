"""Stage 2a, in worker processes: one chunk of raw records -> cleaned, digested, tokenized.

This module is what a data worker imports, so it imports neither torch nor gpt_core (together
~200 MB a process): the main process hands each worker its tokenizer once, at start-up, as the
library object that encodes (`WorkerTokenizer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from launch.errors import UserError

from .sources import Chunk, Source

NOT_TEXT, EMPTY, SHORT = 1, 2, 3  # why a record is dropped before deduplication; 0 means kept
POOL_MIN_BYTES = 16 << 20  # smaller sources tokenize in-process: starting workers costs more than it saves
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: enough to keep them busy, few enough to bound memory


def drop_reasons(min_chars: int) -> dict[int, str]:
    return {
        NOT_TEXT: "not a string (e.g. null or a number)",
        EMPTY: "empty",
        SHORT: f"shorter than {min_chars} characters",
    }


@dataclass(frozen=True)
class WorkerTokenizer:
    """What a worker encodes with: tiktoken's Encoding (GPT-2 BPE) or the `tokenizers` library's
    Tokenizer (a trained tokenizer.json), the end-of-text id, and the dtype that holds every id."""

    backend: object
    eot_id: int
    dtype: str  # "uint16" up to 65,536 tokens, else "uint32"

    @classmethod
    def of(cls, tokenizer) -> WorkerTokenizer:
        """From a gpt_core tokenizer (not imported here: see the module's docstring)."""
        return cls(tokenizer.backend, tokenizer.eot_id, tokenizer.token_dtype)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """The ids of each text; `<|endoftext|>` written in a story is plain text, never the separator."""
        if hasattr(self.backend, "encode_ordinary"):
            return [self.backend.encode_ordinary(t) for t in texts]
        self.backend.encode_special_tokens = True  # not kept when the object is pickled to a worker
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]


@dataclass
class TokenizedChunk:
    codes: np.ndarray  # int8 per record: 0 kept, else NOT_TEXT / EMPTY / SHORT
    digests: np.ndarray  # V16 blake2b digest per kept record, for exact-duplicate removal
    lengths: np.ndarray  # int64 tokens per kept record, its <|endoftext|> included
    tokens: np.ndarray  # the tokenizer's dtype (uint16 where it fits), the kept records one after the other
    position: int = 0


def _decode_json_lines(chunk: Chunk) -> list:
    texts, has_field = [], False
    for number, line in zip(chunk.line_numbers, chunk.lines, strict=True):
        try:
            row = json.loads(line)
        except UnicodeDecodeError as e:
            raise UserError(
                f"{chunk.origin}:{number}: bytes that are not UTF-8 ({e.reason}); re-save the file as UTF-8"
            ) from None
        except json.JSONDecodeError as e:
            raise UserError(f"{chunk.origin}:{number}: not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise UserError(
                f"{chunk.origin}:{number}: a JSON {type(row).__name__}, not an object with a "
                f"{chunk.field!r} field; write one object per line"
            )
        has_field = has_field or chunk.field in row
        texts.append(row.get(chunk.field))
    if texts and not has_field:
        first = json.loads(chunk.lines[0])
        raise UserError(f"{chunk.origin} has no field {chunk.field!r} (fields: {sorted(first)}); pass --text-field")
    return texts


def tokenize_chunk(chunk: Chunk, min_chars: int, encoding: WorkerTokenizer) -> TokenizedChunk:
    """Clean (trim; drop non-text, empty and near-empty records), digest and tokenize one chunk.
    Text is otherwise kept as written: punctuation and quotes stay (removing them, as the paper did,
    flatters perplexity)."""
    texts = chunk.texts if chunk.lines is None else _decode_json_lines(chunk)
    codes = np.zeros(len(texts), dtype=np.int8)
    kept = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            codes[i] = NOT_TEXT
            continue
        text = text.strip()
        if not text:
            codes[i] = EMPTY
        elif len(text) < min_chars:
            codes[i] = SHORT
        else:
            kept.append(text)
    digests = np.frombuffer(b"".join(hashlib.blake2b(t.encode(), digest_size=16).digest() for t in kept), dtype="V16")
    tokens, lengths = tokenize_texts(kept, encoding)
    return TokenizedChunk(codes, digests, lengths, tokens, chunk.position)


def tokenize_texts(texts: list[str], encoding: WorkerTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The ids of each text plus the end-of-text token, as one array and per-text lengths."""
    pieces = encoding.encode_texts(texts)
    lengths = np.fromiter((len(p) + 1 for p in pieces), dtype=np.int64, count=len(pieces))
    tokens = np.full(int(lengths.sum()), encoding.eot_id, dtype=encoding.dtype)
    ends = np.cumsum(lengths) - 1
    for piece, end in zip(pieces, ends.tolist(), strict=True):
        tokens[end - len(piece) : end] = piece
    return tokens, lengths


_worker_encoding = None  # set once per worker process by _worker_start


def _worker_start(encoding) -> None:
    import signal

    global _worker_encoding
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _worker_encoding = encoding


def _tokenize_in_worker(chunk: Chunk, min_chars: int) -> TokenizedChunk:
    return tokenize_chunk(chunk, min_chars, _worker_encoding)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def workers_for(source: Source, workers: int) -> int:
    """Worker processes worth starting for `source`: 1 (this process) for a small local source."""
    return 1 if source.files is not None and source.size() < POOL_MIN_BYTES else workers


def tokenized_chunks(source: Source, min_chars: int, workers: int, scratch: Path, encoding) -> Iterator[TokenizedChunk]:
    """The source's chunks tokenized, in source order, by `workers` processes (this one when
    `workers` is 1). At most IN_FLIGHT_PER_WORKER chunks per worker are read ahead."""
    chunks = source.chunks(scratch)
    if workers <= 1:
        for chunk in chunks:
            yield tokenize_chunk(chunk, min_chars, encoding)
        return
    with _worker_pool(workers, encoding) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_tokenize_in_worker, (chunk, min_chars)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().get()  # a worker's UserError is raised here, in order
        while pending:
            yield pending.popleft().get()


@contextlib.contextmanager
def _worker_pool(workers: int, encoding):
    """`workers` spawned processes (not forked: the caller may hold threads, e.g. Accelerate's
    process group), all started here, each holding `encoding`.

    A spawned process first re-imports its parent's main module, in case the work it is sent was
    defined there. Ours never is, and the main module is the CLI or a recipe, which import torch
    (~200 MB a process). So the workers are started while the main module names no module and no
    file to re-import: each then imports only this module, and sources.py for the chunks it is sent.
    """
    import multiprocessing

    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers, _worker_start, (encoding,))
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
    try:
        yield pool
        pool.close()
    finally:
        pool.terminate()  # an error or Ctrl-C: drop what is queued; after close(), the workers are done
        pool.join()
