"""From a story source to batches of token ids, in three stages, one file each.

    sources.py   hub id | file | folder | glob  --read in bounded chunks-->  raw records
    prepare.py   --workers: clean, digest, tokenize-->  --dedupe, split-->  uint16 token cache on disk
    batching.py  --memory-mapped packed or padded rows-->  seeded, resumable, per-process batches

Everything a user sees is counted: stories dropped and why, tokens per split, stories truncated
and the padding fraction in `padded` mode.
"""

import importlib

from ..config import SMOKE_DATA, DataConfig
from .prepare import (
    SPLITS,
    PreparedData,
    TokenSplit,
    concat_splits,
    prepare_data,
    split_stories,
    tokenize_chunk,
    tokenize_stories,
    verify_cache,
)
from .sources import Chunk, Source, resolve_files

# batching (torch) loads on first use: the tokenizer worker processes import this package too
_BATCHING = ("EpochShuffleSampler", "PackedDataset", "PaddedDataset", "make_dataloader", "make_dataset")


def __getattr__(name: str):
    if name in _BATCHING or name == "batching":
        batching = importlib.import_module(".batching", __name__)
        return batching if name == "batching" else getattr(batching, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SMOKE_DATA",
    "SPLITS",
    "Chunk",
    "DataConfig",
    "EpochShuffleSampler",
    "PackedDataset",
    "PaddedDataset",
    "PreparedData",
    "Source",
    "TokenSplit",
    "concat_splits",
    "make_dataloader",
    "make_dataset",
    "prepare_data",
    "resolve_files",
    "split_stories",
    "tokenize_chunk",
    "tokenize_stories",
    "verify_cache",
]
