import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from gpt_core import EOT_ID, IGNORE_INDEX, get_tokenizer
from launch.data import (
    SMOKE_DATA, DataConfig, EpochShuffleSampler, PackedDataset, PaddedDataset, TokenSplit,
    clean_stories, concat_splits, make_dataloader, prepare_data, tokenize_stories,
)
from launch.errors import UserError
from tests.helpers import REPO, make_stories, write_jsonl

STORIES = make_stories(60)


def prepared(source, cache_dir, seed=1234, **kw):
    return prepare_data(DataConfig(source=str(source), cache_dir=cache_dir, **kw), seed, log=lambda *_: None)


def story_texts(split):
    """Each story of a TokenSplit decoded back to text, without its <|endoftext|>."""
    tok = get_tokenizer()
    bounds = zip(split.offsets[:-1], split.offsets[1:], strict=True)
    return [tok.decode(split.tokens[a:b]).removesuffix("<|endoftext|>") for a, b in bounds]


def all_text(p):
    return {name: story_texts(s) for name, s in p.splits.items()}


def write_format(tmp_path, fmt, gz):
    name = {"jsonl": "s.jsonl", "json": "s.json", "txt": "s.txt", "parquet": "s.parquet"}[fmt] + (".gz" if gz else "")
    path = tmp_path / name
    if fmt == "jsonl":
        return write_jsonl(path, STORIES, gz)
    if fmt == "json":
        data = json.dumps([{"text": s} for s in STORIES]).encode()
    elif fmt == "txt":  # the official release: stories separated by <|endoftext|> lines
        data = "".join(f"{s}\n<|endoftext|>\n" for s in STORIES).encode()
    else:
        plain = tmp_path / "plain.parquet"
        pd.DataFrame({"text": STORIES}).to_parquet(plain)
        data = plain.read_bytes()
        plain.unlink()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "txt", "parquet"])
def test_every_source_format_reads_the_same_stories(tmp_path, cache_dir, fmt, gz):
    path = write_format(tmp_path, fmt, gz)
    texts = all_text(prepared(path, cache_dir))
    assert texts["train"] + texts["validation"] + texts["test"] == STORIES


def test_folder_and_glob_sources(tmp_path, cache_dir):
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", STORIES[:30])
    write_jsonl(tmp_path / "d" / "b.jsonl.gz", STORIES[30:], gz=True)
    by_folder = all_text(prepared(tmp_path / "d", cache_dir))
    by_glob = all_text(prepared(tmp_path / "d" / "*.json*", cache_dir))
    assert by_folder == by_glob and sum(map(len, by_folder.values())) == 60


def test_custom_text_field(tmp_path, cache_dir):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"story": s}) + "\n" for s in STORIES))
    assert len(prepared(path, cache_dir, text_field="story").splits["train"].offsets) == 43


def test_cleaning_keeps_text_as_written_and_counts_drops():
    kept, dropped = clean_stories(["  Tom said, \"don't!\"  ", "", "   ", "tiny", "  Tom said, \"don't!\""], 10)
    assert kept == ['Tom said, "don\'t!"']
    assert dropped == {"empty": 2, "shorter than 10 characters": 1, "exact duplicate": 1}


def test_paper_split_is_first_stories_in_order_70_20_10(tmp_path, cache_dir):
    texts = all_text(prepared(write_jsonl(tmp_path / "s.jsonl", STORIES), cache_dir, max_samples=50))
    assert texts["train"] == STORIES[:35] and texts["validation"] == STORIES[35:45] and texts["test"] == STORIES[45:50]


@pytest.mark.parametrize("mode", ["paper", "shuffle"])
def test_splits_are_disjoint_and_deterministic(tmp_path, mode):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES + STORIES[:5])  # duplicates must not leak across splits
    a = all_text(prepared(source, str(tmp_path / "c1"), split_mode=mode))
    b = all_text(prepared(source, str(tmp_path / "c2"), split_mode=mode))
    assert a == b
    sets = [set(a[s]) for s in ("train", "validation", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 60


def test_shuffle_depends_on_seed(tmp_path, cache_dir):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES)
    a = all_text(prepared(source, cache_dir, split_mode="shuffle", seed=1))
    b = all_text(prepared(source, cache_dir, split_mode="shuffle", seed=2))
    assert a["train"] != b["train"] and a["train"] != STORIES[:42]
    # the seed decides only the shuffled split: the ordered one is the same cache whatever the seed
    assert prepared(source, cache_dir, seed=1).cache_dir == prepared(source, cache_dir, seed=2).cache_dir


def test_stories_that_are_not_text_are_dropped_with_the_reason(tmp_path, cache_dir):
    import json

    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*STORIES[:30], None, 42, *STORIES[30:40]]))
    data = prepared(source, cache_dir)
    assert data.meta["dropped"] == {"not a string (e.g. null or a number)": 2}
    assert sum(len(v) for v in all_text(data).values()) == 40


def test_source_mode_uses_the_heldout_files(tmp_path, cache_dir):
    train = write_jsonl(tmp_path / "train.jsonl", STORIES[:40])
    held = write_jsonl(tmp_path / "valid.jsonl", STORIES[38:60])  # two overlap with train: dropped
    texts = all_text(prepared(train, cache_dir, split_mode="source", heldout_source=str(held)))
    assert texts["train"] == STORIES[:40]
    assert texts["validation"] + texts["test"] == STORIES[40:60]


def test_cache_hit_then_miss_on_change(tmp_path, cache_dir):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES)
    first = prepared(source, cache_dir)
    second = prepared(source, cache_dir)
    assert not first.from_cache and second.from_cache and first.cache_dir == second.cache_dir
    assert prepared(source, cache_dir, min_chars=30).cache_dir != first.cache_dir  # cleaning changed
    assert prepared(source, cache_dir, split_mode="shuffle").cache_dir != first.cache_dir
    write_jsonl(source, STORIES[:-1] + ["A brand new final story that was not there before."])
    changed = prepared(source, cache_dir)
    assert not changed.from_cache and changed.cache_dir != first.cache_dir
    assert "brand new" in all_text(changed)["test"][-1]


def test_tokens_are_uint16_with_end_of_text_after_each_story():
    tokens, offsets = tokenize_stories(["Once upon a time", "The end."])
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [7454, 2402, 257, 640, EOT_ID] + get_tokenizer().encode("The end.") + [EOT_ID]
    assert offsets.tolist() == [0, 5, len(tokens)]


def split_of(lengths):
    tokens = np.concatenate([np.r_[np.arange(1, n, dtype=np.uint16) + 100 * i, EOT_ID] for i, n in enumerate(lengths)])
    return TokenSplit("train", tokens.astype(np.uint16), np.r_[0, np.cumsum(lengths)].astype(np.int64))


def test_packed_rows_are_shifted_windows_covering_every_transition():
    split = split_of([7, 9, 5, 12])  # 33 tokens
    ds = PackedDataset(split, 8)
    assert len(ds) == 4  # (33 - 1) // 8
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    stream = torch.from_numpy(split.tokens.astype(np.int64))
    assert torch.equal(torch.cat(xs), stream[:32]) and torch.equal(torch.cat(ys), stream[1:33])
    assert all(x.shape == (8,) for x in xs)


def test_padded_rows_mask_padding_and_count_truncation():
    split = split_of([4, 12, 9])
    ds = PaddedDataset(split, 8)
    assert ds.truncated == 1  # the 12-token story is longer than context + 1
    x, y = ds[0]
    assert x[:3].tolist() == split.tokens[0:3].tolist() and y[:3].tolist() == split.tokens[1:4].tolist()
    assert (y[3:] == IGNORE_INDEX).all() and (x[3:] == EOT_ID).all()
    x, y = ds[1]
    assert (y != IGNORE_INDEX).all() and y[-1] == split.tokens[4 + 8]
    assert ds.padding_fraction == pytest.approx(1 - (3 + 8 + 8) / 24)


def test_epoch_shuffle_is_seeded_and_changes_per_epoch():
    s = EpochShuffleSampler(50, seed=3)
    e0 = list(s)
    assert e0 == list(EpochShuffleSampler(50, seed=3)) and sorted(e0) == list(range(50))
    s.set_epoch(1)
    assert list(s) != e0


def test_smoke_data_ships_with_the_package(cache_dir):
    p = prepared(SMOKE_DATA, cache_dir)
    assert all(split.num_stories > 0 for split in p.splits.values())


# ---- bad input ------------------------------------------------------------------------------
def test_missing_path(cache_dir):
    with pytest.raises(UserError, match="data path ./nope/stories.jsonl does not exist"):
        prepared("./nope/stories.jsonl", cache_dir)


def test_empty_file(tmp_path, cache_dir):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match=r"e.jsonl is empty"):
        prepared(tmp_path / "e.jsonl", cache_dir)


def test_bad_json_line_names_file_and_line(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "s.jsonl", STORIES[:5])
    path.write_text(path.read_text() + '{"text": "broken\n')
    with pytest.raises(UserError, match=r"s.jsonl:6: not valid JSON"):
        prepared(path, cache_dir)


def test_missing_text_field(tmp_path, cache_dir):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"body": s}) + "\n" for s in STORIES))
    with pytest.raises(UserError, match=r"has no field 'text' \(fields: \['body'\]\); pass --text-field"):
        prepared(path, cache_dir)


def test_undecodable_bytes(tmp_path, cache_dir):
    path = tmp_path / "s.txt"
    path.write_bytes(b"A fine story about a cat.\n<|endoftext|>\nBad \xff\xfe bytes in this story here.\n")
    with pytest.raises(UserError, match="not UTF-8"):
        prepared(path, cache_dir)


def test_all_stories_dropped(tmp_path, cache_dir):
    with pytest.raises(UserError, match=r"split is empty .*dropped\); give --data more stories"):
        prepared(write_jsonl(tmp_path / "s.jsonl", ["hi", "", "ok"]), cache_dir)


def test_split_smaller_than_one_row(tmp_path, cache_dir):
    p = prepared(write_jsonl(tmp_path / "s.jsonl", STORIES[:10]), cache_dir)
    with pytest.raises(UserError, match="fewer tokens than one packed row"):
        make_dataloader(PackedDataset(p.splits["test"], 4096), 2, 0, False, False)


def test_unreachable_hub_fails_at_once_with_the_fix(tmp_path):
    code = (
        "from launch.data import DataConfig, prepare_data\n"
        f"prepare_data(DataConfig(source='roneneldan/TinyStories', cache_dir={str(tmp_path)!r}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot reach the Hugging Face hub" in proc.stderr and "--data" in proc.stderr


def test_shared_tinystories_counts_are_honest_and_cached(shared_tinystories, cache_dir, capsys):
    """The real files: every story is accounted for, and the second preparation reads the cache."""
    cfg = DataConfig(source=str(shared_tinystories), cache_dir=cache_dir)
    first = prepare_data(cfg)
    printed = capsys.readouterr().out
    assert "5,813 stories read" in printed and "tokens/s" in printed
    stories = sum(s.num_stories for s in first.splits.values())
    assert stories + sum(first.meta["dropped"].values()) == 5813
    assert sum(len(s.tokens) for s in first.splits.values()) == 1_188_299  # PROVENANCE.md's count
    lengths = np.concatenate([s.story_lengths for s in first.splits.values()])
    assert 0.08 <= (lengths > 257).mean() <= 0.17  # 8-17 % of stories are longer than the context
    second = prepare_data(cfg)
    assert second.from_cache and "tokens from cache" in capsys.readouterr().out


def test_concat_splits_keeps_every_story_boundary(tmp_path, cache_dir):
    p = prepared(write_jsonl(tmp_path / "s.jsonl", STORIES), cache_dir)
    whole = concat_splits(p.splits.values())
    assert whole.num_stories == 60
    assert story_texts(whole) == STORIES
