"""Stage 2: clean, deduplicate, split and tokenize a source once, into a token cache on disk.

    chunks of raw records  --workers: decode, clean, digest, tokenize-->  token chunks, in order
      --main process: drop exact duplicates, append-->  one ordered token stream + story offsets
      --cut at the split boundaries (or gather, for a shuffled split)-->  {split}.tokens.npy / .offsets.npy

Memory stays bounded whatever the corpus size: a few chunks in flight, 16 bytes per story for the
duplicate digests and, for a shuffled split, 8 bytes per story for the permutation. The splits are
the ones cutting the whole list of stories would give (the paper's ordered 70/20/10, the seeded
shuffle, a held-out source): a split's boundary needs the count of kept stories, which is known once
the stream is written, so the cut happens then, from the memory-mapped stream.

The cache folder appears by one atomic rename when complete; an interrupted build (Ctrl-C, kill -9,
a full disk) leaves at most a scratch folder that the next build removes. Several processes (the
ranks of a run, or a `gpt-launch prepare` job and a run) share one build through a file lock: one
builds, the others say what they wait for and then read the cache. No collective operation is
involved, so no process-group timeout can end a long first build.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gpt_core import EOT_ID, get_tokenizer

from ..config import DataConfig
from ..errors import UserError
from .sources import Chunk, Source

SPLITS = ("train", "validation", "test")
CACHE_VERSION = 2  # bump when the on-disk layout or the cleaning rules change
NOT_TEXT, EMPTY, SHORT = 1, 2, 3  # why a record is dropped before deduplication; 0 means kept
POOL_MIN_BYTES = 16 << 20  # smaller sources tokenize in-process: starting workers costs more than it saves
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: enough to keep them busy, few enough to bound memory
REPORT_EVERY_S = 30.0


def drop_reasons(min_chars: int) -> dict[int, str]:
    return {
        NOT_TEXT: "not a string (e.g. null or a number)",
        EMPTY: "empty",
        SHORT: f"shorter than {min_chars} characters",
    }


# ---------------------------------------------------------------------------------------------
# In a worker: one chunk of raw records -> cleaned, digested, tokenized
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenizedChunk:
    codes: np.ndarray  # int8 per record: 0 kept, else NOT_TEXT / EMPTY / SHORT
    digests: np.ndarray  # V16 blake2b digest per kept record, for exact-duplicate removal
    lengths: np.ndarray  # int64 tokens per kept record, its <|endoftext|> included
    tokens: np.ndarray  # uint16, the kept records one after the other
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


def tokenize_chunk(chunk: Chunk, min_chars: int) -> TokenizedChunk:
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
    tokens, lengths = tokenize_texts(kept)
    return TokenizedChunk(codes, digests, lengths, tokens, chunk.position)


def tokenize_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """GPT-2 ids of each text plus <|endoftext|>, as one uint16 array and per-text lengths."""
    encode = get_tokenizer().encoding.encode_ordinary
    pieces = [encode(t) for t in texts]
    lengths = np.fromiter((len(p) + 1 for p in pieces), dtype=np.int64, count=len(pieces))
    tokens = np.full(int(lengths.sum()), EOT_ID, dtype=np.uint16)  # GPT-2 ids < 65,536 fit in uint16
    ends = np.cumsum(lengths) - 1
    for piece, end in zip(pieces, ends.tolist(), strict=True):
        tokens[end - len(piece) : end] = piece
    return tokens, lengths


def tokenize_stories(stories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """GPT-2 ids of each story plus <|endoftext|>, as one uint16 stream and story offsets."""
    tokens, lengths = tokenize_texts(stories)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return tokens, offsets


def _worker_start() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    get_tokenizer()


def workers_for(source: Source, workers: int) -> int:
    """Worker processes worth starting for `source`: 1 (this process) for a small local source."""
    return 1 if source.files is not None and source.size() < POOL_MIN_BYTES else workers


def tokenized_chunks(source: Source, min_chars: int, workers: int, scratch: Path) -> Iterator[TokenizedChunk]:
    """The source's chunks tokenized, in source order, by `workers` processes (this one when
    `workers` is 1). At most IN_FLIGHT_PER_WORKER chunks per worker are read ahead."""
    chunks = source.chunks(scratch)
    if workers <= 1:
        for chunk in chunks:
            yield tokenize_chunk(chunk, min_chars)
        return
    import multiprocessing

    # spawn, not fork: the caller may hold threads (Accelerate's process group, torch's pools)
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start
    ) as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(tokenize_chunk, chunk, min_chars))
                if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# ---------------------------------------------------------------------------------------------
# In the main process: deduplicate and append, in order
# ---------------------------------------------------------------------------------------------
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
        self.runs.append(np.sort(digests[new]))
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.sort(np.concatenate([self.runs[-1], last]))
        return new


class Stream:
    """An append-only token stream and its story offsets, as raw files in the scratch folder."""

    def __init__(self, folder: Path, name: str) -> None:
        self.tokens_path, self.offsets_path = folder / f"{name}.tokens.bin", folder / f"{name}.offsets.bin"
        self._tokens, self._offsets = open(self.tokens_path, "wb"), open(self.offsets_path, "wb")
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
        tokens = np.memmap(self.tokens_path, dtype=np.uint16, mode="r") if self.num_tokens else np.zeros(0, np.uint16)
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
            self.path.write_text(json.dumps({"progress": self.describe()}))

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def _append_source(
    source: Source,
    stream: Stream,
    seen: DigestSet,
    cfg: DataConfig,
    workers: int,
    scratch: Path,
    dropped: Counter,
    progress: Progress,
    prefix: str = "",
    exclude: DigestSet | None = None,
) -> int:
    """Tokenize `source` into `stream`, dropping what cleaning and deduplication reject (and, for a
    held-out source, stories in `exclude`); returns the count of records read."""
    reasons = drop_reasons(cfg.min_chars)
    read, base = 0, progress.position
    for part in tokenized_chunks(source, cfg.min_chars, workers, scratch):
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


# ---------------------------------------------------------------------------------------------
# Cutting the stream into splits
# ---------------------------------------------------------------------------------------------
def _write_split(folder: Path, name: str, stream: Stream, stories) -> tuple[int, int]:
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
        np.lib.format.write_array_header_1_0(out_tokens, {"descr": "<u2", "fortran_order": False, "shape": (total,)})
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


def split_counts(n: int, cfg: DataConfig) -> tuple[int, int]:
    """(train, validation) story counts for n stories; the rest is the test split."""
    return int(n * cfg.train_fraction), int(n * cfg.validation_fraction)


def split_stories(stories: list, cfg: DataConfig, seed: int | None = None) -> dict[str, list]:
    """A list cut as the cache cuts a stream: in order by the config's fractions, after a shuffle
    seeded by `seed` for `split_mode` shuffle."""
    order = _shuffled_order(len(stories), cfg, seed)
    if order is not None:
        stories = [stories[i] for i in order]
    n_train, n_val = split_counts(len(stories), cfg)
    return {
        "train": stories[:n_train],
        "validation": stories[n_train : n_train + n_val],
        "test": stories[n_train + n_val :],
    }


def _shuffled_order(n: int, cfg: DataConfig, seed: int | None) -> np.ndarray | None:
    if cfg.split_mode != "shuffle":
        return None
    if seed is None:
        raise ValueError("split_mode 'shuffle' needs the run's seed")
    return np.random.default_rng(seed).permutation(n)


# ---------------------------------------------------------------------------------------------
# The build: sources -> scratch streams -> split files -> one atomic rename
# ---------------------------------------------------------------------------------------------
def _sources(cfg: DataConfig) -> tuple[Source, Source | None]:
    main = Source.of(cfg.source, cfg.text_field, cfg.hub_split, cfg.max_samples)
    if cfg.split_mode != "source":
        return main, None
    if cfg.heldout_source is None and main.files is not None:
        raise UserError("--split-mode source with local --data needs --heldout-data naming the held-out files")
    if cfg.heldout_source is None:  # a hub dataset's own validation split
        return main, Source.of(cfg.source, cfg.text_field, "validation", None)
    return main, Source.of(cfg.heldout_source, cfg.text_field, cfg.hub_split, None)


def _build(
    cfg: DataConfig,
    seed: int | None,
    sources: tuple[Source, Source | None],
    scratch: Path,
    workers: int,
    how: str,
    bar: bool,
    log,
) -> dict:
    start = time.perf_counter()
    main, heldout = sources
    workers = workers_for(main, workers)
    log(f"data: {cfg.source} -> {how}, tokenizing in {workers} process(es)")
    progress = Progress(log, scratch / "progress.json", main.size() + (heldout.size() if heldout else 0), bar)
    dropped: Counter = Counter()
    try:
        stream, seen = Stream(scratch, "source"), DigestSet()
        read = _append_source(main, stream, seen, cfg, workers, scratch, dropped, progress)
        stream.close()
        if heldout is None:
            n = stream.num_stories
            order = _shuffled_order(n, cfg, seed)
            n_train, n_val = split_counts(n, cfg)
            bounds = {
                "train": range(n_train),
                "validation": range(n_train, n_train + n_val),
                "test": range(n_train + n_val, n),
            }
            picks = {k: (order[r.start : r.stop] if order is not None else r) for k, r in bounds.items()}
            parts = {k: (stream, v) for k, v in picks.items()}
        else:
            held = Stream(scratch, "heldout")
            _append_source(heldout, held, DigestSet(), cfg, workers, scratch, dropped, progress, "held-out ", seen)
            held.close()
            half = held.num_stories // 2
            parts = {
                "train": (stream, range(stream.num_stories)),
                "validation": (held, range(half)),
                "test": (held, range(half, held.num_stories)),
            }
        del seen
    finally:
        progress.close()
    log(f"data: {read:,} stories read")
    tokenize_seconds = time.perf_counter() - start
    dropped = Counter({k: v for k, v in dropped.items() if v})
    if dropped:
        log("data: dropped " + ", ".join(f"{n:,} {why}" for why, n in sorted(dropped.items())))
    meta = {"stories_read": read, "dropped": dict(dropped), "workers": workers, "splits": {}}
    for name, (source_stream, stories) in parts.items():
        count, total = _write_split(scratch, name, source_stream, stories)
        meta["splits"][name] = {"stories": count, "tokens": total}
        log(f"data: {name:<10} {count:>9,} stories {total:>12,} tokens {total / max(count, 1):7.1f} tokens/story")
    for leftover in scratch.glob("*.bin"):  # the streams: only the split files stay
        leftover.unlink()
    (scratch / "progress.json").unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    total_tokens = sum(s["tokens"] for s in meta["splits"].values())
    meta.update(prepare_seconds=seconds, tokens_per_second=total_tokens / max(tokenize_seconds, 1e-9))
    log(f"data: {total_tokens:,} tokens prepared in {seconds:.1f} s ({meta['tokens_per_second']:,.0f} tokens/s)")
    return meta


def cache_key(cfg: DataConfig, seed: int | None, fingerprint: str, heldout_fingerprint: str | None) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("source", "heldout_source", "cache_dir", "workers")}
    if cfg.split_mode == "shuffle":  # the seed decides the split only then
        settings["seed"] = seed
    tokenizer = get_tokenizer()
    material = json.dumps(
        {
            "version": CACHE_VERSION,
            "source": fingerprint,
            "heldout": heldout_fingerprint,
            "settings": settings,
            "tokenizer": [tokenizer.name, tokenizer.vocab_size, tokenizer.encode("Once upon a time, 東京 🐉")],
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


@contextlib.contextmanager
def build_lock(path: Path, scratch: Path, say: Callable[[str], None]):
    """Hold an exclusive lock on `path` (flock: the kernel releases it when its holder dies, even by
    kill -9). While another process holds it, say every REPORT_EVERY_S what this one waits for."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        next_report = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + REPORT_EVERY_S
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    so_far = ""
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        so_far = f" (so far {json.loads((scratch / 'progress.json').read_text())['progress']})"
                    say(f"data: waiting for {holder} to finish the token cache {path.with_suffix('')}{so_far}")
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class TokenSplit:
    name: str
    tokens: np.ndarray  # uint16, every story followed by <|endoftext|>; memory-mapped from the cache
    offsets: np.ndarray  # int64, story i is tokens[offsets[i]:offsets[i + 1]]; memory-mapped too

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
    return TokenSplit("all", np.concatenate([s.tokens for s in splits]), np.concatenate(offsets))


@dataclass
class PreparedData:
    splits: dict[str, TokenSplit]
    meta: dict
    cache_dir: Path
    from_cache: bool


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def prepare_data(
    cfg: DataConfig,
    seed: int | None = None,
    log: Callable[[str], None] = print,
    say: Callable[[str], None] | None = None,
    progress_bar: bool = False,
) -> PreparedData:
    """Read the token cache of `cfg`, building it first if needed.

    `seed` (the run's one seed) orders the stories for `split_mode` shuffle and is unused otherwise.
    `log` gets the report of a build or a cache hit (a run passes Accelerate's main-process print);
    `say` gets what must be said on every process, waiting and building (default: `log`).
    """
    say = say or log
    main, heldout = _sources(cfg)
    fingerprint, how = main.fingerprint()
    key = cache_key(cfg, seed, fingerprint, heldout.fingerprint()[0] if heldout else None)
    tokens_dir = cfg.cache_root() / "tokens"
    target, scratch = tokens_dir / key, tokens_dir / f".build-{key}"
    from_cache = (target / "meta.json").exists()
    if not from_cache:
        tokens_dir.mkdir(parents=True, exist_ok=True)
        with build_lock(tokens_dir / f"{key}.lock", scratch, say):
            from_cache = (target / "meta.json").exists()  # another process built it while we waited
            if not from_cache:
                _build_atomically(cfg, seed, (main, heldout), target, scratch, how, say, progress_bar)
                (tokens_dir / f"{key}.lock").unlink(missing_ok=True)
    meta = json.loads((target / "meta.json").read_text())
    if from_cache:
        counts = ", ".join(f"{k} {v['tokens']:,}" for k, v in meta["splits"].items())
        log(f"data: tokens from cache {target} ({counts} tokens)")
    splits = {
        name: TokenSplit(name, _load(target / f"{name}.tokens.npy"), _load(target / f"{name}.offsets.npy"))
        for name in SPLITS
    }
    for name, split in splits.items():
        if split.num_stories == 0:
            raise UserError(
                f"the {name} split is empty ({meta['stories_read']:,} stories read, "
                f"{sum(meta['dropped'].values()):,} dropped); give --data more stories"
            )
    return PreparedData(splits, meta, target, from_cache)


def verify_cache(prepared: PreparedData) -> None:
    """Check that every split's files agree with each other and with meta.json."""
    for name, split in prepared.splits.items():
        offsets, tokens = np.asarray(split.offsets), split.tokens
        expected = prepared.meta["splits"][name]
        problem = None
        if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) <= 0).any():
            problem = "story offsets do not fit the token file"
        elif (split.num_stories, len(tokens)) != (expected["stories"], expected["tokens"]):
            problem = "counts differ from meta.json"
        elif (tokens[offsets[1:] - 1] != EOT_ID).any():
            problem = "a story does not end with <|endoftext|>"
        if problem:
            raise UserError(
                f"token cache {prepared.cache_dir} is corrupt ({name}: {problem}); delete that folder "
                "and run gpt-launch prepare again"
            )


def _load(path: Path) -> np.ndarray:
    array = np.load(path, mmap_mode="r")
    return array if array.size else np.asarray(array)


def _build_atomically(
    cfg: DataConfig, seed, sources: tuple[Source, Source | None], target: Path, scratch: Path, how: str, say, bar: bool
) -> None:
    shutil.rmtree(scratch, ignore_errors=True)  # an interrupted build's leftovers: we hold the lock
    scratch.mkdir(parents=True)
    workers = cfg.workers or default_workers()
    try:
        meta = _build(cfg, seed, sources, scratch, workers, how, bar, say)
        meta.update(version=CACHE_VERSION, source=cfg.source, how=how)
        (scratch / "meta.json").write_text(json.dumps(meta, indent=2))
        os.rename(scratch, target)  # atomic: a reader sees the whole cache or none of it
    except OSError as e:
        if not _disk_full(e):
            raise
        raise UserError(
            f"no room left writing the token cache in {scratch.parent} ({e.strerror}); free space "
            "or point --data-cache at a bigger disk"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
