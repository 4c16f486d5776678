"""Stage 1: read a story source in bounded chunks.

A source is a hub id, a file, a folder or a glob. Each reader yields `Chunk`s of at most
CHUNK_STORIES raw records, so memory stays flat however big the corpus is: JSON lines are handed
on undecoded (the tokenizer workers decode them in parallel), `.txt` is read in blocks and cut at
every `<|endoftext|>`, parquet and hub datasets by Arrow record batches. A source is also given a
cheap fingerprint (`Source.fingerprint`) that keys the token cache without reading the text.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import json
import os
import re
import shutil
import socket
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpt_core.errors import first_line
from launch.errors import UserError

HUB_HOST = "huggingface.co"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "name" or "owner/name"; anything else is a path
FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SEPARATOR = "<|endoftext|>"  # the .txt releases separate stories with it
CHUNK_STORIES = 2048  # records per chunk: ~0.4 M tokens, a few MB of text
TEXT_BLOCK = 1 << 20  # characters read from a .txt at a time


@dataclass
class Chunk:
    """Raw records in source order. `lines` are undecoded JSON lines (bytes) whose `field` holds the
    story; `texts` are stories already (None or a non-string is counted as "not text")."""

    origin: str  # the file or hub split, for messages
    texts: list | None = None
    lines: list[bytes] | None = None
    field: str = "text"
    line_numbers: list[int] | None = None  # of `lines`, 1-based
    position: int = 0  # bytes (rows, for a hub dataset) of the whole source read so far, for the progress bar


def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def resolve_files(source: str) -> list[Path] | None:
    """The data files `source` names, or None when it is a hub id. Missing paths are an error."""
    if not source.strip():
        raise UserError("--data is empty; pass a file, a folder, a glob or a hub id (e.g. --data stories.jsonl)")
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


# ---------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------
def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _position(f) -> int:
    """Bytes of the file on disk read so far (the compressed position for .gz)."""
    return (f.fileobj if isinstance(f, gzip.GzipFile) else f).tell()


def _read_json_lines(path: Path, field: str) -> Iterator[Chunk]:
    with _open_binary(path) as f:
        lines, numbers = [], []
        for number, line in enumerate(f, 1):
            if line.isspace():  # blank lines are not records
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) == CHUNK_STORIES:
                yield Chunk(str(path), lines=lines, field=field, line_numbers=numbers, position=_position(f))
                lines, numbers = [], []
        if lines:
            yield Chunk(str(path), lines=lines, field=field, line_numbers=numbers, position=_position(f))


def _read_json_array(path: Path, field: str) -> Iterator[Chunk]:
    """A .json holding one array of objects has no line structure to stream by: it is read whole
    (use JSON lines for big corpora)."""
    with _open_binary(path) as f:
        try:
            rows = json.load(f)
        except UnicodeDecodeError:
            raise UserError(f"{path} holds bytes that are not UTF-8; re-save it as UTF-8") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix the file") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f'{path} is not a JSON array of objects or JSON lines; write one {{"{field}": ...}} per line')
    if rows and not any(field in r for r in rows):
        raise UserError(f"{path} has no field {field!r} (fields: {sorted(rows[0])}); pass --text-field")
    for start in range(0, len(rows), CHUNK_STORIES):
        yield Chunk(str(path), texts=[r.get(field) for r in rows[start : start + CHUNK_STORIES]], position=start)


def _starts_with_bracket(path: Path) -> bool:
    with _open_binary(path) as f:
        head = f.read(4096).lstrip()
    return head[:1] == b"["


def _read_text(path: Path) -> Iterator[Chunk]:
    """Stories separated by <|endoftext|>, read a block at a time; newlines are read as Python's
    universal newlines (what a text-mode read of the whole file gives)."""
    with _open_binary(path) as raw:
        # utf-8-sig: a byte-order mark, as some editors write one, is not part of the first story
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)
        stories, tail = [], ""
        try:
            while block := text.read(TEXT_BLOCK):
                *complete, tail = (tail + block).split(SEPARATOR)
                stories += complete
                while len(stories) >= CHUNK_STORIES:
                    yield Chunk(str(path), texts=stories[:CHUNK_STORIES], position=_position(raw))
                    stories = stories[CHUNK_STORIES:]
        except UnicodeDecodeError as e:
            raise UserError(f"{path} holds bytes that are not UTF-8 ({e.reason}); re-save it as UTF-8") from None
        stories.append(tail)  # what follows the last separator is a story too (often just a newline)
        yield Chunk(str(path), texts=stories, position=_position(raw))


def _read_parquet(path: Path, field: str, scratch: Path) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    readable = path
    if path.suffix.lower() == ".gz":  # parquet is read by seeking: unpack it into the build's scratch folder
        readable = scratch / (path.name.removesuffix(".gz") + f".{os.getpid()}")
        scratch.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "rb") as src, open(readable, "wb") as dst:
            shutil.copyfileobj(src, dst)
    try:
        try:
            parquet = pq.ParquetFile(readable)
        except Exception as e:
            raise UserError(f"could not read {path} as parquet: {first_line(e)}") from None
        names = parquet.schema_arrow.names
        if field not in names:
            raise UserError(f"{path} has no field {field!r} (fields: {names}); pass --text-field")
        done = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_STORIES, columns=[field]):
            done += batch.num_rows
            yield Chunk(str(path), texts=batch.column(0).to_pylist(), position=done)
    finally:
        if readable != path:
            readable.unlink(missing_ok=True)


def read_file(path: Path, field: str, scratch: Path) -> Iterator[Chunk]:
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty; remove it or point --data at files with stories")
    kind = _format_of(path)
    try:
        if kind == "text":
            yield from _read_text(path)
        elif kind == "parquet":
            yield from _read_parquet(path, field, scratch)
        elif _starts_with_bracket(path):
            yield from _read_json_array(path, field)
        else:
            yield from _read_json_lines(path, field)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # cut short (a partial download), or not gzip at all
        reason = str(e) or type(e).__name__
        raise UserError(
            f"{path} is not a complete gzip file ({reason}); download it again, or name it without "
            ".gz if it is not compressed"
        ) from None


def files_fingerprint(files: list[Path]) -> str:
    """Path, size and modification time of each file: a cheap key that changes when a file does."""
    return json.dumps([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])


# ---------------------------------------------------------------------------------------------
# The Hugging Face hub, through `datasets` and its own cache
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)  # once a process: keying and then reading a hub source would probe twice
def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(v, "0") not in ("0", "", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _datasets(online: bool):
    import datasets

    datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)  # we report errors ourselves, in one line
    datasets.disable_progress_bars()
    if not online:  # go straight to the local cache instead of waiting on retries
        import huggingface_hub.constants

        datasets.config.HF_DATASETS_OFFLINE = True
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    return datasets


def _not_available(name: str, online: bool, error: Exception) -> UserError:
    if not online:
        return UserError(
            f"cannot reach the Hugging Face hub ({HUB_HOST}) and dataset {name!r} is not in the local "
            "datasets cache; pass your own files instead (--data stories/: .txt, .jsonl, .json or .parquet, gzipped or "
            "not, a file, a folder or a glob), or --smoke for the stories shipped with the package"
        )
    return UserError(f"could not load {name!r} from the hub: {first_line(error)}")


def hub_fingerprint(name: str, split: str) -> tuple[str, str]:
    """(fingerprint, how) from the dataset's builder: its config and the hash `datasets` files its
    cache under (the hub revision), found online or in the local cache without reading any rows."""
    online = _hub_reachable()
    datasets = _datasets(online)
    try:
        builder = datasets.load_dataset_builder(name)
    except Exception as e:
        raise _not_available(name, online, e) from None
    how = "hub (online)" if online else "hub dataset from the local datasets cache (offline)"
    return json.dumps(["hub", name, split, builder.config_id, builder.hash]), how


def read_hub(name: str, split: str, field: str, max_samples: int | None) -> Iterator[Chunk]:
    online = _hub_reachable()
    datasets = _datasets(online)
    split_spec = f"{split}[:{max_samples}]" if max_samples else split
    try:
        ds = datasets.load_dataset(name, split=split_spec)  # Arrow files in datasets' cache, memory-mapped
    except Exception as e:
        raise _not_available(name, online, e) from None
    if field not in ds.column_names:
        raise UserError(f"dataset {name!r} has no field {field!r} (fields: {ds.column_names}); pass --text-field")
    done = 0
    for batch in ds.select_columns([field]).with_format("arrow").iter(batch_size=CHUNK_STORIES):
        done += batch.num_rows
        yield Chunk(f"{name}:{split_spec}", texts=batch.column(0).to_pylist(), position=done)


# ---------------------------------------------------------------------------------------------
# One source, whatever its kind
# ---------------------------------------------------------------------------------------------
@dataclass
class Source:
    spec: str
    field: str
    split: str  # of a hub dataset
    max_samples: int | None
    files: list[Path] | None  # None for a hub id

    @classmethod
    def of(cls, spec: str, field: str, split: str, max_samples: int | None) -> Source:
        return cls(spec, field, split, max_samples, resolve_files(spec))

    def fingerprint(self) -> tuple[str, str]:
        """(key material, how it is read): cheap for both kinds, no story is read."""
        if self.files is None:
            return hub_fingerprint(self.spec, self.split)
        return files_fingerprint(self.files), f"{len(self.files)} local file(s)"

    def size(self) -> int:
        """Bytes (files) or rows (hub) that the chunks' `position` counts up to, for progress."""
        return sum(f.stat().st_size for f in self.files) if self.files is not None else 0

    def chunks(self, scratch: Path) -> Iterator[Chunk]:
        """The source's chunks, at most `max_samples` records in all; `position` counts across files."""
        if self.files is None:
            yield from read_hub(self.spec, self.split, self.field, self.max_samples)
            return
        left, done = self.max_samples, 0
        for path in self.files:
            for chunk in read_file(path, self.field, scratch):
                if left is not None:
                    chunk = _first(chunk, left)
                    left -= _count(chunk)
                chunk.position += done
                yield chunk
                if left == 0:
                    return
            done += path.stat().st_size


def _count(chunk: Chunk) -> int:
    return len(chunk.lines if chunk.lines is not None else chunk.texts)


def _first(chunk: Chunk, n: int) -> Chunk:
    if chunk.lines is not None:
        chunk.lines, chunk.line_numbers = chunk.lines[:n], chunk.line_numbers[:n]
    else:
        chunk.texts = chunk.texts[:n]
    return chunk
