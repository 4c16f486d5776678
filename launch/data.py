"""From a story source to batches of token ids.

    source (hub id | file | folder | glob)  --load-->  stories  --clean-->  kept stories
      --split-->  train / validation / test  --tokenize once-->  uint16 arrays in a cache
      --packed or padded datasets-->  seeded, resumable, per-process batches

Everything a user sees is counted: stories dropped and why, tokens per split, stories truncated
and the padding fraction in `padded` mode.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gpt_core import EOT_ID, IGNORE_INDEX, get_tokenizer

from .config import SMOKE_DATA, DataConfig  # noqa: F401 - SMOKE_DATA is re-exported
from .errors import UserError

HUB_HOST = "huggingface.co"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "name" or "owner/name"; anything else is a path
SPLITS = ("train", "validation", "test")
CACHE_VERSION = 1  # bump when the on-disk layout or the cleaning rules change
FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def resolve_files(source: str) -> list[Path] | None:
    """The data files `source` names, or None when it is a hub id. Missing paths are an error."""
    expanded = os.path.expanduser(source)
    if any(ch in expanded for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"no files match {source!r}; check the pattern or pass a folder with --data")
    elif Path(expanded).is_dir():
        files = sorted(p for p in Path(expanded).rglob("*") if p.is_file() and _format_of(p))
        if not files:
            raise UserError(f"folder {source} holds no .txt, .jsonl, .json or .parquet files (optionally .gz)")
    elif Path(expanded).is_file():
        files = [Path(expanded)]
    elif not HUB_ID.fullmatch(source) or _format_of(Path(source)):
        raise UserError(f"data path {source} does not exist; pass an existing file, folder or glob with --data")
    else:
        return None
    unknown = [str(f) for f in files if not _format_of(f)]
    if unknown:
        raise UserError(f"unsupported data file {unknown[0]}; use .txt, .jsonl, .json or .parquet (optionally .gz)")
    return [f.resolve() for f in files]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _quiet_datasets():
    import datasets

    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)  # we report errors ourselves, in one line
    datasets.disable_progress_bars()
    return datasets


def _load_hub(name: str, split: str, field: str, max_samples: int | None) -> tuple[list[str], str, str]:
    datasets = _quiet_datasets()
    online = _hub_reachable()
    if not online:  # go straight to the local cache instead of waiting on retries
        import huggingface_hub.constants

        datasets.config.HF_DATASETS_OFFLINE = True
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    split_spec = f"{split}[:{max_samples}]" if max_samples else split
    try:
        ds = datasets.load_dataset(name, split=split_spec)
    except Exception as e:  # noqa: BLE001 - the hub raises many types; all mean "not available"
        if not online:
            raise UserError(
                f"cannot reach the Hugging Face hub ({HUB_HOST}) and dataset {name!r} is not in the local "
                "datasets cache; pass local files instead, e.g. --data ../shared/data/tinystories"
            ) from None
        raise UserError(f"could not load {name!r} split {split!r} from the hub: {str(e).splitlines()[0]}") from None
    if field not in ds.column_names:
        raise UserError(f"dataset {name!r} has no field {field!r} (fields: {ds.column_names}); pass --text-field")
    how = "hub (online)" if online else "hub dataset from the local cache (offline)"
    return ds[field], f"hub:{name}:{split_spec}:{ds._fingerprint}", how


def _locate_bad_json(path: Path) -> str | None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path}:{number}: bytes that are not UTF-8 ({e.reason}); re-save the file as UTF-8"
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    return f"{path}:{number}: not valid JSON ({e.msg}); fix or delete that line"
    return None


def _load_file(path: Path, field: str, hf_cache: Path) -> list[str]:
    datasets = _quiet_datasets()
    builder = _format_of(path)
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty; remove it or point --data at files with stories")
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    readable = path
    if builder == "parquet" and path.suffix == ".gz":  # Arrow reads parquet by seeking: unpack it first
        readable = hf_cache / "unpacked" / (hashlib.sha256(files_fingerprint([path]).encode()).hexdigest()[:16] + ".parquet")
        if not readable.exists():
            readable.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "rb") as src, open(f"{readable}.tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(f"{readable}.tmp", readable)
    try:
        ds = datasets.load_dataset(builder, data_files=str(readable), split="train", cache_dir=str(hf_cache), **kwargs)
    except Exception as e:  # noqa: BLE001 - turn the loader's error wall into one line naming file and line
        if builder == "json":
            located = _locate_bad_json(path)
            if located:
                raise UserError(located) from None
        if "utf-8" in str(e).lower() or isinstance(e.__cause__, UnicodeDecodeError):
            raise UserError(f"{path} holds bytes that are not UTF-8; re-save it as UTF-8") from None
        raise UserError(f"could not read {path} as {builder}: {str(e).splitlines()[0]}") from None
    if builder == "text":  # the .txt releases separate stories with <|endoftext|> lines
        return [story for document in ds["text"] for story in document.split("<|endoftext|>")]
    if field not in ds.column_names:
        raise UserError(f"{path} has no field {field!r} (fields: {ds.column_names}); pass --text-field")
    return [t if isinstance(t, str) else None for t in ds[field]]  # None: counted as "not text"


def load_stories(source: str, field: str, split: str, max_samples: int | None, cache_root: Path):
    """(stories, fingerprint, description). Local files are read in sorted order."""
    files = resolve_files(source)
    if files is None:
        return _load_hub(source, split, field, max_samples)
    stories: list[str] = []
    for path in files:
        stories += _load_file(path, field, cache_root / "hf-datasets")
        if max_samples and len(stories) >= max_samples:
            break
    return stories[:max_samples] if max_samples else stories, files_fingerprint(files), f"{len(files)} local file(s)"


def files_fingerprint(files: list[Path]) -> str:
    """Path, size and modification time of each file: a cheap key that changes when a file does."""
    return json.dumps([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])


# ---------------------------------------------------------------------------------------------
# Cleaning and splits
# ---------------------------------------------------------------------------------------------
def clean_stories(stories: list[str], min_chars: int) -> tuple[list[str], Counter]:
    """Trim whitespace; drop empty, near-empty and exact-duplicate stories. Text is otherwise kept
    as written: punctuation and quotes stay (removing them, as the paper did, flatters perplexity)."""
    kept, dropped, seen = [], Counter(), set()
    for story in stories:
        if not isinstance(story, str):
            dropped["not a string (e.g. null or a number)"] += 1
            continue
        story = story.strip()
        if not story:
            dropped["empty"] += 1
        elif len(story) < min_chars:
            dropped[f"shorter than {min_chars} characters"] += 1
        elif (digest := hashlib.blake2b(story.encode(), digest_size=16).digest()) in seen:
            dropped["exact duplicate"] += 1  # also keeps a story from landing in two splits
        else:
            seen.add(digest)
            kept.append(story)
    return kept, dropped


def split_stories(stories: list[str], cfg: DataConfig, seed: int | None = None) -> dict[str, list[str]]:
    """Cut in order by the config's fractions; `split_mode` shuffle shuffles with `seed` first."""
    if cfg.split_mode == "shuffle":
        if seed is None:
            raise ValueError("split_mode 'shuffle' needs the run's seed")
        order = np.random.default_rng(seed).permutation(len(stories))
        stories = [stories[i] for i in order]
    n = len(stories)
    n_train, n_val = int(n * cfg.train_fraction), int(n * cfg.validation_fraction)
    return {
        "train": stories[:n_train],
        "validation": stories[n_train : n_train + n_val],
        "test": stories[n_train + n_val :],
    }


# ---------------------------------------------------------------------------------------------
# Tokenize once, into a cache
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenSplit:
    name: str
    tokens: np.ndarray  # uint16, every story followed by <|endoftext|>; memory-mapped from the cache
    offsets: np.ndarray  # int64, story i is tokens[offsets[i]:offsets[i + 1]]

    @property
    def num_stories(self) -> int:
        return len(self.offsets) - 1

    @property
    def story_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def concat_splits(splits) -> TokenSplit:
    """Several splits as one, story boundaries kept (e.g. to evaluate on every story of a source)."""
    splits = list(splits)
    offsets = [splits[0].offsets]
    for split in splits[1:]:
        offsets.append(split.offsets[1:] + offsets[-1][-1])
    return TokenSplit("all", np.concatenate([s.tokens for s in splits]), np.concatenate(offsets))


def tokenize_stories(stories: list[str], chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """GPT-2 ids of each story plus <|endoftext|>, as one uint16 stream and story offsets."""
    tokenizer = get_tokenizer()
    pieces, lengths = [], []
    for start in range(0, len(stories), chunk):
        for ids in tokenizer.encode_batch(stories[start : start + chunk]):
            ids.append(EOT_ID)
            pieces.append(np.asarray(ids, dtype=np.uint16))  # GPT-2 ids < 65,536 fit in uint16
            lengths.append(len(ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
    return tokens, offsets


def cache_key(cfg: DataConfig, seed: int | None, fingerprint: str, heldout_fingerprint: str | None) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("source", "heldout_source", "cache_dir")}
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


@dataclass
class PreparedData:
    splits: dict[str, TokenSplit]
    meta: dict
    cache_dir: Path
    from_cache: bool


def _cheap_fingerprint(source: str | None) -> str | None:
    """A key for local files without reading them; hub sources need loading to be fingerprinted."""
    if source is None:
        return None
    files = resolve_files(source)
    return files_fingerprint(files) if files is not None else None


def _build(cfg: DataConfig, seed: int | None, log: Callable[[str], None]) -> tuple[dict[str, list[str]], dict, str, str | None]:
    start = time.perf_counter()
    stories, fingerprint, how = load_stories(cfg.source, cfg.text_field, cfg.hub_split, cfg.max_samples, cfg.cache_root())
    log(f"data: {cfg.source} -> {how}, {len(stories):,} stories read")
    kept, dropped = clean_stories(stories, cfg.min_chars)
    heldout_fingerprint = None
    if cfg.split_mode == "source":
        heldout_source = cfg.heldout_source or cfg.source
        heldout_split = "validation" if cfg.heldout_source is None else cfg.hub_split
        if cfg.heldout_source is None and resolve_files(cfg.source) is not None:
            raise UserError("--split-mode source with local --data needs --heldout-data naming the held-out files")
        held, heldout_fingerprint, _ = load_stories(heldout_source, cfg.text_field, heldout_split, None, cfg.cache_root())
        held, held_dropped = clean_stories(held, cfg.min_chars)
        train_set = set(kept)
        overlap = [s for s in held if s in train_set]
        held = [s for s in held if s not in train_set]
        dropped.update({f"held-out {k}": v for k, v in held_dropped.items()})
        if overlap:
            dropped["held-out story also in train"] += len(overlap)
        half = len(held) // 2
        splits = {"train": kept, "validation": held[:half], "test": held[half:]}
    else:
        splits = split_stories(kept, cfg, seed)
    if dropped:
        log("data: dropped " + ", ".join(f"{n:,} {why}" for why, n in sorted(dropped.items())))
    meta = {"stories_read": len(stories), "dropped": dict(dropped), "load_seconds": time.perf_counter() - start}
    return splits, meta, fingerprint, heldout_fingerprint


def _write_cache(target: Path, splits: dict[str, list[str]], meta: dict, log) -> None:
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta["splits"] = {}
    for name in SPLITS:
        start = time.perf_counter()
        tokens, offsets = tokenize_stories(splits[name])
        seconds = max(time.perf_counter() - start, 1e-9)
        np.save(tmp / f"{name}.tokens.npy", tokens)
        np.save(tmp / f"{name}.offsets.npy", offsets)
        n = len(splits[name])
        meta["splits"][name] = {"stories": n, "tokens": int(len(tokens)), "tokenize_seconds": seconds}
        log(
            f"data: {name:<10} {n:>9,} stories {len(tokens):>12,} tokens "
            f"{len(tokens) / max(n, 1):7.1f} tokens/story {len(tokens) / seconds:>12,.0f} tokens/s"
        )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        os.rename(tmp, target)  # atomic: a reader sees the whole cache or none of it
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_data(cfg: DataConfig, seed: int | None = None, main_process_first=None,
                 log: Callable[[str], None] = print) -> PreparedData:
    """Load, clean, split and tokenize `cfg.source`, or read all of it back from the cache.

    `seed` (the run's one seed) orders the stories for `split_mode` shuffle and is unused otherwise.
    `main_process_first` (Accelerate's context manager) lets one process build the cache while the
    others wait, then read it.
    """
    with main_process_first() if main_process_first else contextlib.nullcontext():
        fingerprint, heldout = _cheap_fingerprint(cfg.source), _cheap_fingerprint(cfg.heldout_source)
        splits_text = meta = None
        if fingerprint is None:  # a hub source: load it to learn its fingerprint
            splits_text, meta, fingerprint, heldout = _build(cfg, seed, log)
        target = cfg.cache_root() / "tokens" / cache_key(cfg, seed, fingerprint, heldout)
        from_cache = (target / "meta.json").exists()
        if not from_cache:
            if splits_text is None:
                splits_text, meta, _, _ = _build(cfg, seed, log)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_cache(target, splits_text, meta, log)
    meta = json.loads((target / "meta.json").read_text())
    if from_cache:
        counts = ", ".join(f"{k} {v['tokens']:,}" for k, v in meta["splits"].items())
        log(f"data: tokens from cache {target} ({counts} tokens)")
    splits = {
        name: TokenSplit(
            name,
            np.load(target / f"{name}.tokens.npy", mmap_mode="r"),
            np.load(target / f"{name}.offsets.npy"),
        )
        for name in SPLITS
    }
    for name, split in splits.items():
        if split.num_stories == 0:
            raise UserError(
                f"the {name} split is empty ({meta['stories_read']:,} stories read, "
                f"{sum(meta['dropped'].values()):,} dropped); give --data more stories"
            )
    return PreparedData(splits, meta, target, from_cache)


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------
class PackedDataset(Dataset):
    """The token stream cut into windows of context + 1 (stride context): inputs and targets shifted
    by one, no padding, every next-token transition trained once; only the final partial window is lost."""

    def __init__(self, split: TokenSplit, context: int):
        self.tokens, self.context = split.tokens, context
        self.count = max((len(split.tokens) - 1) // context, 0)
        self.real_tokens_per_row = context

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        window = torch.from_numpy(self.tokens[i * self.context : (i + 1) * self.context + 1].astype(np.int64))
        return window[:-1], window[1:]


class PaddedDataset(Dataset):
    """One story per row, truncated to the context and padded (the paper's layout). Padding targets
    are IGNORE_INDEX, so the loss and every metric skip them."""

    def __init__(self, split: TokenSplit, context: int):
        self.split, self.context = split, context
        lengths = split.story_lengths
        self.truncated = int((lengths > context + 1).sum())
        targets_per_row = np.minimum(lengths, context + 1) - 1
        self.padding_fraction = 1.0 - float(targets_per_row.sum()) / max(len(lengths) * context, 1)

    def __len__(self) -> int:
        return self.split.num_stories

    def __getitem__(self, i: int):
        a, b = self.split.offsets[i], self.split.offsets[i + 1]
        story = torch.from_numpy(self.split.tokens[a : min(b, a + self.context + 1)].astype(np.int64))
        x = torch.full((self.context,), EOT_ID, dtype=torch.long)
        y = torch.full((self.context,), IGNORE_INDEX, dtype=torch.long)
        x[: len(story) - 1], y[: len(story) - 1] = story[:-1], story[1:]
        return x, y


def make_dataset(split: TokenSplit, context: int, layout: str) -> Dataset:
    if layout not in ("packed", "padded"):
        raise UserError(f"--layout must be packed or padded, got {layout!r}")
    return PackedDataset(split, context) if layout == "packed" else PaddedDataset(split, context)


class EpochShuffleSampler(Sampler):
    """A permutation drawn from (seed, epoch): every process draws the same one, and Accelerate's
    prepared dataloader deals its batches out so each process gets distinct ones."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def make_dataloader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, drop_last: bool, pin_memory=False):
    if len(dataset) == 0:
        raise UserError(
            f"a split holds fewer tokens than one {type(dataset).__name__.replace('Dataset', '').lower()} row; "
            "give --data more stories or lower --context"
        )
    sampler = EpochShuffleSampler(len(dataset), seed, shuffle)
    # Each new iterator of a DataLoader draws a base seed from its `generator`, or from the global
    # torch RNG when it has none. That RNG also drives dropout, and a resumed run opens its epoch's
    # iterator at a different moment than an uninterrupted one (and validation opens one per
    # evaluation): with a draw from the global RNG there, dropout masks after a resume would differ.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))
