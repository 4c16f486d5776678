"""What the data tests share: small stories in every format, and reading a prepared cache back as text."""

import gzip
import itertools
import json

import pandas as pd

from launch.data.prepare import prepare_data
from launch.data.tokenizer_training import split_texts
from launch.settings.config import DataConfig
from tests.helpers import make_stories, write_jsonl

STORIES = make_stories(60)


def prepared(source, cache_dir, seed=1234, **kw):
    return prepare_data(DataConfig(source=str(source), cache_dir=cache_dir, **kw), seed, log=lambda *_: None)


def story_texts(split, tokenizer=None):
    """Each story of a TokenSplit decoded back to text, without its <|endoftext|>."""
    return list(itertools.chain.from_iterable(split_texts(split, tokenizer)))


def all_text(p):
    return {name: story_texts(s, p.tokenizer) for name, s in p.splits.items()}


def write_format(tmp_path, fmt, gz, stories=STORIES):
    name = {"jsonl": "s.jsonl", "json": "s.json", "txt": "s.txt", "parquet": "s.parquet"}[fmt] + (".gz" if gz else "")
    path = tmp_path / name
    if fmt == "jsonl":
        return write_jsonl(path, stories, gz)
    if fmt == "json":
        data = json.dumps([{"text": s} for s in stories]).encode()
    elif fmt == "txt":  # the official release: stories separated by <|endoftext|> lines
        data = "".join(f"{s}\n<|endoftext|>\n" for s in stories).encode()
    else:
        plain = tmp_path / "plain.parquet"
        pd.DataFrame({"text": stories}).to_parquet(plain, row_group_size=16)
        data = plain.read_bytes()
        plain.unlink()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
