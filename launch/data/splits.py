"""Stage 2c: the splits. Where the stream is cut (the paper's ordered 70/20/10, a seeded shuffle,
or a held-out source), the split files written from it, and the splits read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from launch.settings.config import DataConfig

from .stream import Stream

SPLITS = ("train", "validation", "test")


@dataclass
class TokenSplit:
    name: str
    tokens: np.ndarray  # uint16 (uint32 past 65,536 tokens), each story then <|endoftext|>; memory-mapped
    offsets: np.ndarray  # int64, story i is tokens[offsets[i]:offsets[i + 1]]; memory-mapped too
    eot_id: int  # the tokenizer's <|endoftext|>: what separates, and pads, stories

    @property
    def num_stories(self) -> int:
        return len(self.offsets) - 1

    @property
    def story_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def concat_splits(splits) -> TokenSplit:
    """Several splits as one, story boundaries kept (e.g. to evaluate on every story of a source)."""
    splits = list(splits)
    offsets = [np.asarray(splits[0].offsets)]
    for split in splits[1:]:
        offsets.append(np.asarray(split.offsets[1:]) + offsets[-1][-1])
    tokens = np.concatenate([s.tokens for s in splits])
    return TokenSplit("all", tokens, np.concatenate(offsets), splits[0].eot_id)


def split_plan(stream: Stream, heldout: Stream | None, cfg: DataConfig, seed: int | None) -> dict[str, tuple]:
    """{split: (stream, stories)}: which stories of which stream each split holds, as a range or,
    for a shuffled split, an array of story numbers. A held-out stream gives validation its first
    half and test the rest; otherwise the stream is cut in order by the config's fractions, after
    a permutation seeded by `seed` for split_mode shuffle."""
    if heldout is not None:
        half = heldout.num_stories // 2
        return {
            "train": (stream, range(stream.num_stories)),
            "validation": (heldout, range(half)),
            "test": (heldout, range(half, heldout.num_stories)),
        }
    n = stream.num_stories
    n_train, n_val = int(n * cfg.train_fraction), int(n * cfg.validation_fraction)
    bounds = {"train": range(n_train), "validation": range(n_train, n_train + n_val), "test": range(n_train + n_val, n)}
    if cfg.split_mode != "shuffle":
        return {name: (stream, stories) for name, stories in bounds.items()}
    if seed is None:
        raise ValueError("split_mode 'shuffle' needs the run's seed")
    order = np.random.default_rng(seed).permutation(n)
    return {name: (stream, order[r.start : r.stop]) for name, r in bounds.items()}


def write_split(folder: Path, name: str, stream: Stream, stories) -> tuple[int, int]:
    """Write the stories `stories` (a range, or an array of story numbers) of a stream as one split,
    a block of stories at a time, so memory stays bounded however many stories the split holds.
    Plain writes into .npy files, not memory maps: a full disk then raises ENOSPC, not SIGBUS."""
    contiguous = isinstance(stories, range)
    block = 1 << 16 if contiguous else 1 << 13  # a gathered block builds an index of ~200 x block int64

    def blocks():
        for b in range(0, len(stories), block):
            ids = stories[b : b + block]
            tokens, offsets = stream.mapped()
            starts = np.asarray(offsets[ids.start : ids.stop] if contiguous else offsets[ids])
            ends = np.asarray(offsets[ids.start + 1 : ids.stop + 1] if contiguous else offsets[ids + 1])
            yield tokens, starts, ends
            del tokens, offsets

    total = sum(int((ends - starts).sum()) for _, starts, ends in blocks())
    with (
        open(folder / f"{name}.tokens.npy", "wb") as out_tokens,
        open(folder / f"{name}.offsets.npy", "wb") as out_offsets,
    ):
        header = {"descr": stream.dtype.newbyteorder("<").str, "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(out_tokens, header)
        np.lib.format.write_array_header_1_0(
            out_offsets, {"descr": "<i8", "fortran_order": False, "shape": (len(stories) + 1,)}
        )
        out_offsets.write(np.zeros(1, dtype=np.int64).data)
        written = 0
        for tokens, starts, ends in blocks():
            lengths = ends - starts
            if contiguous:
                part = np.array(tokens[starts[0] : ends[-1]])
            else:  # each story's tokens, in the permuted order
                first_out = np.cumsum(lengths) - lengths
                part = tokens[np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - first_out, lengths)]
            out_tokens.write(part.data)
            out_offsets.write((written + np.cumsum(lengths)).data)
            written += len(part)
    return len(stories), total


def load_split(folder: Path, name: str, eot_id: int) -> TokenSplit:
    return TokenSplit(name, _load(folder / f"{name}.tokens.npy"), _load(folder / f"{name}.offsets.npy"), eot_id)


def _load(path: Path) -> np.ndarray:
    array = np.load(path, mmap_mode="r")
    return array if array.size else np.asarray(array)
