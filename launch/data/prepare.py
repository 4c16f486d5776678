"""Stage 2: clean, deduplicate, split and tokenize a source once, into a token cache on disk.

    chunks of raw records  --workers (tokenize.py): decode, clean, digest, tokenize-->  token chunks, in order
      --main process (stream.py): drop exact duplicates, append-->  one ordered token stream + story offsets
      --cut at the split boundaries, or gather for a shuffled split (splits.py)-->  {split}.tokens.npy / .offsets.npy

The cache is keyed by the tokenizer's content (its fingerprint), not its path: a cache built with
one tokenizer is never read with another, and the same tokenizer found at another path (a run's
copy, a checkpoint's) reuses it.

Memory stays bounded whatever the corpus size: a few chunks in flight, 16 bytes per story for the
duplicate digests and, for a shuffled split, 8 bytes per story for the permutation. The splits are
the ones cutting the whole list of stories would give: a split's boundary needs the count of kept
stories, which is known once the stream is written, so the cut happens then, from the stream.

The cache folder appears by one atomic rename when complete; an interrupted build (Ctrl-C, kill -9,
a full disk) leaves at most a scratch folder that the next build removes. Several processes (the
ranks of a run, or a `gpt-launch prepare` job and a run) share one build through a file lock: one
builds, the others say what they wait for and then read the cache. No collective operation is
involved, so no process-group timeout can end a long first build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gpt_core import Tokenizer
from launch.errors import UserError, check_writable, is_disk_full
from launch.progress import REPORT_EVERY_S
from launch.settings.config import DataConfig

from .sources import Source
from .splits import SPLITS, TokenSplit, load_split, split_plan, write_split
from .stream import DigestSet, Progress, Stream, Tokenizing, append_source
from .tokenize import WorkerTokenizer, default_workers, workers_for

CACHE_VERSION = 3  # bump when the on-disk layout or the cleaning rules change


@dataclass
class PreparedData:
    splits: dict[str, TokenSplit]
    meta: dict
    cache_dir: Path
    from_cache: bool
    tokenizer: Tokenizer


def prepare_data(
    cfg: DataConfig,
    seed: int | None = None,
    log: Callable[[str], None] = print,
    every_rank: Callable[[str], None] | None = None,
    progress_bar: bool = False,
) -> PreparedData:
    """Read the token cache of `cfg`, building it first if needed.

    `seed` (the run's one seed) orders the stories for `split_mode` shuffle and is unused otherwise.
    `log` gets the report of a build or a cache hit (a run passes Accelerate's main-process print);
    `every_rank` gets what each process must say for itself, waiting or building (default: `log`).
    """
    every_rank = every_rank or log
    tokenizer = cfg.load_tokenizer()
    main, heldout = _sources(cfg)
    fingerprint, how = main.fingerprint()
    key = cache_key(cfg, seed, fingerprint, heldout.fingerprint()[0] if heldout else None, tokenizer)
    root = cfg.cache_root()
    check_writable(root, "--data-cache")
    tokens_dir = root / "tokens"
    target, scratch = tokens_dir / key, tokens_dir / f".build-{key}"
    from_cache = (target / "meta.json").exists()
    if not from_cache:
        tokens_dir.mkdir(parents=True, exist_ok=True)
        with build_lock(tokens_dir / f"{key}.lock", scratch, every_rank):
            from_cache = (target / "meta.json").exists()  # another process built it while we waited
            if not from_cache:
                sources = (main, heldout)
                _build_atomically(cfg, seed, sources, tokenizer, target, scratch, how, every_rank, progress_bar)
                (tokens_dir / f"{key}.lock").unlink(missing_ok=True)
    meta = json.loads((target / "meta.json").read_text())
    if meta.get("tokenizer", {}).get("fingerprint") != tokenizer.fingerprint:
        raise UserError(
            f"token cache {target} was not built with {tokenizer.describe()}; delete that folder and run "
            "gpt-launch prepare again"
        )
    if from_cache:
        counts = ", ".join(f"{k} {v['tokens']:,}" for k, v in meta["splits"].items())
        log(f"data: tokens from cache {target} ({counts} tokens)")
    splits = {name: load_split(target, name, tokenizer.eot_id) for name in SPLITS}
    for name, split in splits.items():
        if split.num_stories == 0:
            why = ", ".join(f"{n:,} {reason}" for reason, n in meta["dropped"].items())
            raise UserError(
                f"the {name} split is empty ({meta['stories_read']:,} stories read, "
                f"{sum(meta['dropped'].values()):,} dropped{': ' + why if why else ''}); give --data more "
                "stories, or name the field that holds them with --text-field"
            )
    return PreparedData(splits, meta, target, from_cache, tokenizer)


def prepare_or_verify(cfg: DataConfig, seed: int | None, progress_bar: bool) -> PreparedData:
    """`gpt-launch prepare`: build the cache, or check the one already built; print its folder."""
    prepared = prepare_data(cfg, seed, progress_bar=progress_bar)
    if prepared.from_cache:
        verify_cache(prepared)
        print(f"data: cache verified, {sum(s.num_stories for s in prepared.splits.values()):,} stories")
    print(prepared.cache_dir)
    return prepared


def verify_cache(prepared: PreparedData) -> None:
    """Check that every split's files agree with each other and with meta.json."""
    eot_id = prepared.tokenizer.eot_id
    for name, split in prepared.splits.items():
        offsets, tokens = np.asarray(split.offsets), split.tokens
        expected = prepared.meta["splits"][name]
        problem = None
        if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) <= 0).any():
            problem = "story offsets do not fit the token file"
        elif (split.num_stories, len(tokens)) != (expected["stories"], expected["tokens"]):
            problem = "counts differ from meta.json"
        elif (tokens[offsets[1:] - 1] != eot_id).any():
            problem = "a story does not end with <|endoftext|>"
        if problem:
            raise UserError(
                f"token cache {prepared.cache_dir} is corrupt ({name}: {problem}); delete that folder "
                "and run gpt-launch prepare again"
            )


def cache_key(
    cfg: DataConfig, seed: int | None, fingerprint: str, heldout_fingerprint: str | None, tokenizer: Tokenizer
) -> str:
    unkeyed = ("source", "heldout_source", "cache_dir", "workers", "tokenizer")  # paths, or how: not what
    settings = {k: v for k, v in asdict(cfg).items() if k not in unkeyed}
    if cfg.split_mode == "shuffle":  # the seed decides the split only then
        settings["seed"] = seed
    material = json.dumps(
        {
            "version": CACHE_VERSION,
            "source": fingerprint,
            "heldout": heldout_fingerprint,
            "settings": settings,
            "tokenizer": tokenizer.fingerprint,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


@contextlib.contextmanager
def build_lock(path: Path, scratch: Path, every_rank: Callable[[str], None]):
    """Hold an exclusive lock on `path` (flock: the kernel releases it when its holder dies, even by
    kill -9). While another process holds it, say every REPORT_EVERY_S what this one waits for."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        next_report, since = 0.0, time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                # the holder writes its name just after taking the lock: give it a moment to
                if time.monotonic() >= next_report and (holder or time.monotonic() - since > 2.0):
                    next_report = time.monotonic() + REPORT_EVERY_S
                    holder = holder or "another process"
                    so_far = ""
                    with contextlib.suppress(OSError, ValueError, KeyError):
                        so_far = f" (so far {json.loads((scratch / 'progress.json').read_text())['progress']})"
                    every_rank(f"data: waiting for {holder} to finish the token cache {path.with_suffix('')}{so_far}")
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)


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


def _build_atomically(
    cfg: DataConfig,
    seed,
    sources: tuple[Source, Source | None],
    tokenizer: Tokenizer,
    target: Path,
    scratch: Path,
    how: str,
    log,
    bar: bool,
) -> None:
    shutil.rmtree(scratch, ignore_errors=True)  # an interrupted build's leftovers: we hold the lock
    scratch.mkdir(parents=True)
    try:
        meta = _build(cfg, seed, sources, tokenizer, scratch, how, bar, log)
        meta.update(version=CACHE_VERSION, source=cfg.source, how=how)
        meta["tokenizer"] = {
            "fingerprint": tokenizer.fingerprint,
            "describe": tokenizer.describe(),
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
        }
        (scratch / "meta.json").write_text(json.dumps(meta, indent=2))
        os.rename(scratch, target)  # atomic: a reader sees the whole cache or none of it
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise UserError(
            f"no room left writing the token cache in {scratch.parent} ({e.strerror}); free space "
            "or point --data-cache at a bigger disk"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(
    cfg: DataConfig, seed, sources: tuple[Source, Source | None], tokenizer: Tokenizer, scratch: Path, how, bar, log
) -> dict:
    start = time.perf_counter()
    main, heldout = sources
    workers = workers_for(main, cfg.workers or default_workers())
    log(f"data: {cfg.source} -> {how}, tokenizing in {workers} process(es) with {tokenizer.describe()}")
    total = main.size() + (heldout.size() if heldout else 0)
    encoding = WorkerTokenizer.of(tokenizer)
    job = Tokenizing(cfg.min_chars, workers, scratch, encoding, Progress(log, scratch / "progress.json", total, bar))
    try:
        stream, seen = Stream(scratch, "source", encoding.dtype), DigestSet()
        read = append_source(main, stream, seen, job)
        stream.close()
        held = None
        if heldout is not None:
            held = Stream(scratch, "heldout", encoding.dtype)
            append_source(heldout, held, DigestSet(), job, "held-out ", seen)
            held.close()
        del seen
    finally:
        job.progress.close()
    log(f"data: {read:,} stories read")
    tokenize_seconds = time.perf_counter() - start
    dropped = {k: v for k, v in sorted(job.dropped.items()) if v}
    if dropped:
        log("data: dropped " + ", ".join(f"{n:,} {why}" for why, n in dropped.items()))
    meta = {"stories_read": read, "dropped": dropped, "workers": workers, "splits": {}}
    for name, (source_stream, stories) in split_plan(stream, held, cfg, seed).items():
        count, tokens = write_split(scratch, name, source_stream, stories)
        meta["splits"][name] = {"stories": count, "tokens": tokens}
        log(f"data: {name:<10} {count:>9,} stories {tokens:>12,} tokens {tokens / max(count, 1):7.1f} tokens/story")
    for leftover in scratch.glob("*.bin"):  # the streams: only the split files stay
        leftover.unlink()
    (scratch / "progress.json").unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    total_tokens = sum(s["tokens"] for s in meta["splits"].values())
    meta.update(prepare_seconds=seconds, tokens_per_second=total_tokens / max(tokenize_seconds, 1e-9))
    log(f"data: {total_tokens:,} tokens prepared in {seconds:.1f} s ({meta['tokens_per_second']:,.0f} tokens/s)")
    return meta
