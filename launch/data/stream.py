"""Stage 2b, in the main process: drop exact duplicates and append the tokenized chunks, in order,
to one token stream on disk, reporting progress as it goes."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpt_core.files import write_json
from launch.progress import REPORT_EVERY_S

from .sources import Source
from .tokenize import WorkerTokenizer, drop_reasons, tokenized_chunks


class DigestSet:
    """Exact-duplicate detection at 16 bytes per story: blake2b-128 digests in sorted runs, merged
    like a binary counter (each digest is re-sorted O(log n) times), searched with searchsorted."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def contains(self, digests: np.ndarray) -> np.ndarray:
        found = np.zeros(len(digests), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, digests), len(run) - 1)
            found |= run[at] == digests
        return found

    def add_new(self, digests: np.ndarray) -> np.ndarray:
        """Add `digests`; True for each one seen for the first time (the first of equal ones in a batch)."""
        new = np.zeros(len(digests), dtype=bool)
        new[np.unique(digests, return_index=True)[1]] = True
        new &= ~self.contains(digests)
        if new.any():  # an empty run would have no last element to clip searches to
            self.runs.append(np.sort(digests[new]))
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]))
        return new


class Stream:
    """An append-only token stream and its story offsets, as raw files in the scratch folder."""

    def __init__(self, folder: Path, name: str, dtype: str = "uint16") -> None:
        self.dtype = np.dtype(dtype)
        self.tokens_path, self.offsets_path = folder / f"{name}.tokens.bin", folder / f"{name}.offsets.bin"
        # held open across appends, closed by close(); the build's scratch folder is removed either way
        self._tokens, self._offsets = open(self.tokens_path, "wb"), open(self.offsets_path, "wb")  # noqa: SIM115
        self._offsets.write(np.zeros(1, dtype=np.int64).data)
        self.num_tokens = self.num_stories = 0

    def append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        # file.write, not ndarray.tofile: a full disk then raises OSError with its errno (ENOSPC)
        self._tokens.write(np.ascontiguousarray(tokens).data)
        self._offsets.write((self.num_tokens + np.cumsum(lengths)).data)
        self.num_tokens += int(lengths.sum())
        self.num_stories += len(lengths)

    def close(self) -> Stream:
        self._tokens.close()
        self._offsets.close()
        return self

    def mapped(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, offsets), memory-mapped afresh: drop them after a block of work, so the pages
        read do not pile up in this process's resident memory over the whole stream."""
        empty = np.zeros(0, self.dtype)
        tokens = np.memmap(self.tokens_path, dtype=self.dtype, mode="r") if self.num_tokens else empty
        return tokens, np.memmap(self.offsets_path, dtype=np.int64, mode="r")


@dataclass
class Progress:
    """Stories and tokens so far: a bar for a terminal, a line every REPORT_EVERY_S otherwise, and
    a small file in the scratch folder that processes waiting for this build read."""

    log: Callable[[str], None]
    path: Path
    total: int  # bytes (files) or rows (hub); 0 when unknown
    bar: bool
    stories: int = 0
    tokens: int = 0
    position: int = 0
    _last: float = 0.0
    _tqdm: object = None

    def __post_init__(self) -> None:
        self._last = time.monotonic()
        if self.bar:
            from tqdm import tqdm

            self._tqdm = tqdm(
                total=self.total or None,
                unit="B" if self.total else "it",
                unit_scale=True,
                desc="tokenizing",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def describe(self) -> str:
        done = f" ({self.position / self.total:.0%} of the source)" if self.total else ""
        return f"{self.stories:,} stories, {self.tokens:,} tokens{done}"

    def update(self, stories: int, tokens: int, position: int, base: int = 0) -> None:
        self.stories, self.tokens = self.stories + stories, self.tokens + tokens
        position += base
        if self._tqdm is not None:
            self._tqdm.update(max(position - self.position, 0))
            self._tqdm.set_postfix_str(f"{self.stories:,} stories, {self.tokens:,} tokens", refresh=False)
        self.position = position
        if time.monotonic() - self._last >= REPORT_EVERY_S:
            self._last = time.monotonic()
            if self._tqdm is None:
                self.log(f"data: tokenizing, {self.describe()}")
            write_json(self.path, {"progress": self.describe()}, indent=None)  # read by the processes waiting

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


@dataclass
class Tokenizing:
    """What every source of one build is tokenized with, and what it counts."""

    min_chars: int
    workers: int
    scratch: Path
    encoding: WorkerTokenizer  # handed to each worker once
    progress: Progress
    dropped: Counter = field(default_factory=Counter)


def append_source(
    source: Source,
    stream: Stream,
    seen: DigestSet,
    job: Tokenizing,
    prefix: str = "",
    exclude: DigestSet | None = None,
) -> int:
    """Tokenize `source` into `stream`, dropping what cleaning and deduplication reject (and, for a
    held-out source, stories in `exclude`); returns the count of records read."""
    reasons, dropped, progress = drop_reasons(job.min_chars), job.dropped, job.progress
    read, base = 0, progress.position
    for part in tokenized_chunks(source, job.min_chars, job.workers, job.scratch, job.encoding):
        read += len(part.codes)
        for code, n in enumerate(np.bincount(part.codes, minlength=len(reasons) + 1)[1:], 1):
            if n:
                dropped[prefix + reasons[code]] += int(n)
        keep = seen.add_new(part.digests)
        dropped[prefix + "exact duplicate"] += int((~keep).sum())  # also keeps a story from landing in two splits
        if exclude is not None:
            overlap = keep & exclude.contains(part.digests)
            dropped["held-out story also in train"] += int(overlap.sum())
            keep &= ~overlap
        tokens = part.tokens if keep.all() else part.tokens[np.repeat(keep, part.lengths)]
        stream.append(tokens, part.lengths[keep])
        progress.update(int(keep.sum()), len(tokens), part.position, base)
    return read
