import hashlib
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest

from gpt_core import EOT_ID, get_tokenizer
from launch.data import (
    SMOKE_DATA,
    Chunk,
    DataConfig,
    concat_splits,
    prepare,
    prepare_data,
    sources,
    tokenize_chunk,
    tokenize_stories,
)
from launch.data.prepare import DigestSet, split_stories
from launch.errors import UserError
from tests.helpers import PYTHON, make_stories, write_jsonl

from .common import STORIES, all_text, prepared, story_texts


def test_cleaning_keeps_text_as_written_and_says_why_it_drops():
    chunk = tokenize_chunk(
        Chunk("x", texts=['  Tom said, "don\'t!"  ', "", "   ", "tiny", None, 'Tom said, "don\'t!"']), 10
    )
    assert chunk.codes.tolist() == [0, prepare.EMPTY, prepare.EMPTY, prepare.SHORT, prepare.NOT_TEXT, 0]
    assert get_tokenizer().decode(chunk.tokens[: chunk.lengths[0] - 1]) == 'Tom said, "don\'t!"'
    assert chunk.digests[0] == chunk.digests[1]  # the same story after trimming: the duplicate is dropped later


def test_digest_set_finds_duplicates_within_and_across_batches():
    digests = np.frombuffer(
        b"".join(hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(3000)), dtype="V16"
    )
    seen = DigestSet()
    firsts = [seen.add_new(digests[a : a + 100]) for a in range(0, 2000, 100)]  # 20 batches, merged into runs
    assert all(f.all() for f in firsts) and len(seen.runs) < 20
    again = seen.add_new(np.concatenate([digests[1990:2010], digests[2005:2006]]))
    assert again.tolist() == [False] * 10 + [True] * 10 + [False]  # seen before, new, repeated within the batch


def test_tokens_are_uint16_with_end_of_text_after_each_story():
    tokens, offsets = tokenize_stories(["Once upon a time", "The end."])
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [7454, 2402, 257, 640, EOT_ID] + get_tokenizer().encode("The end.") + [EOT_ID]
    assert offsets.tolist() == [0, 5, len(tokens)]


def test_paper_split_is_first_stories_in_order_70_20_10(tmp_path, cache_dir):
    texts = all_text(prepared(write_jsonl(tmp_path / "s.jsonl", STORIES), cache_dir, max_samples=50))
    assert texts["train"] == STORIES[:35] and texts["validation"] == STORIES[35:45] and texts["test"] == STORIES[45:50]


@pytest.mark.parametrize("mode", ["paper", "shuffle"])
def test_splits_are_disjoint_deterministic_and_cut_as_the_whole_list_would_be(tmp_path, mode):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES + STORIES[:5])  # duplicates must not leak across splits
    a = all_text(prepared(source, str(tmp_path / "c1"), split_mode=mode))
    b = all_text(prepared(source, str(tmp_path / "c2"), split_mode=mode))
    assert a == b
    sets = [set(a[s]) for s in ("train", "validation", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert a == split_stories(STORIES, DataConfig(split_mode=mode), 1234)


def test_shuffle_depends_on_seed(tmp_path, cache_dir):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES)
    a = all_text(prepared(source, cache_dir, split_mode="shuffle", seed=1))
    b = all_text(prepared(source, cache_dir, split_mode="shuffle", seed=2))
    assert a["train"] != b["train"] and a["train"] != STORIES[:42]
    # the seed decides only the shuffled split: the ordered one is the same cache whatever the seed
    assert prepared(source, cache_dir, seed=1).cache_dir == prepared(source, cache_dir, seed=2).cache_dir


def test_source_mode_uses_the_heldout_files(tmp_path, cache_dir):
    train = write_jsonl(tmp_path / "train.jsonl", STORIES[:40])
    held = write_jsonl(tmp_path / "valid.jsonl", STORIES[38:60] + STORIES[50:51])  # 2 in train, 1 repeated
    data = prepared(train, cache_dir, split_mode="source", heldout_source=str(held))
    texts = all_text(data)
    assert texts["train"] == STORIES[:40]
    assert texts["validation"] + texts["test"] == STORIES[40:60]
    assert data.meta["dropped"] == {"held-out story also in train": 2, "held-out exact duplicate": 1}


def test_cache_hit_then_miss_on_change(tmp_path, cache_dir):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES)
    first = prepared(source, cache_dir)
    second = prepared(source, cache_dir)
    assert not first.from_cache and second.from_cache and first.cache_dir == second.cache_dir
    assert prepared(source, cache_dir, min_chars=30).cache_dir != first.cache_dir  # cleaning changed
    assert prepared(source, cache_dir, split_mode="shuffle").cache_dir != first.cache_dir
    assert prepared(source, cache_dir, workers=1).cache_dir == first.cache_dir  # how it is built is not what
    write_jsonl(source, STORIES[:-1] + ["A brand new final story that was not there before."])
    changed = prepared(source, cache_dir)
    assert not changed.from_cache and changed.cache_dir != first.cache_dir
    assert "brand new" in all_text(changed)["test"][-1]
    # tokens and offsets only: no copy of the text, no scratch left behind
    assert sorted(p.name for p in changed.cache_dir.iterdir()) == sorted(
        ["meta.json", *(f"{s}.{kind}.npy" for s in ("train", "validation", "test") for kind in ("tokens", "offsets"))]
    )
    assert all(len(p.name) == 20 and p.is_dir() for p in changed.cache_dir.parent.iterdir())


def test_worker_processes_give_the_same_cache_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(sources, "CHUNK_STORIES", 50)  # several chunks in flight, returned in order
    source = write_jsonl(tmp_path / "s.jsonl", make_stories(600) + make_stories(30))
    one = prepared(source, str(tmp_path / "a"), workers=1, split_mode="shuffle")
    two = prepared(source, str(tmp_path / "b"), workers=2, split_mode="shuffle")
    assert (one.meta["workers"], two.meta["workers"]) == (1, 2)
    assert one.meta["dropped"] == two.meta["dropped"] == {"exact duplicate": 30}
    for name in one.splits:
        assert np.array_equal(one.splits[name].tokens, two.splits[name].tokens)
        assert np.array_equal(one.splits[name].offsets, two.splits[name].offsets)


def test_smoke_data_ships_with_the_package(cache_dir):
    p = prepared(SMOKE_DATA, cache_dir)
    assert all(split.num_stories > 0 for split in p.splits.values())


def test_all_stories_dropped(tmp_path, cache_dir):
    with pytest.raises(UserError, match=r"split is empty .*dropped\); give --data more stories"):
        prepared(write_jsonl(tmp_path / "s.jsonl", ["hi", "", "ok"]), cache_dir)


def test_concat_splits_keeps_every_story_boundary(tmp_path, cache_dir):
    p = prepared(write_jsonl(tmp_path / "s.jsonl", STORIES), cache_dir)
    whole = concat_splits(p.splits.values())
    assert whole.num_stories == 60
    assert story_texts(whole) == STORIES


# ---- the real stories ---------------------------------------------------------------------------
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


def digests(p):
    out = {}
    for name, split in p.splits.items():
        h = hashlib.sha256(np.ascontiguousarray(split.tokens).astype("<u2").tobytes())
        h.update(np.asarray(split.offsets).astype("<i8").tobytes())
        out[name] = (split.num_stories, len(split.tokens), h.hexdigest()[:16])
    return out


# Recorded from the in-memory pipeline this streaming one replaced (launch/data.py at a377509, which
# loaded every story, cleaned, split and then tokenized the lists): each split's story count, token
# count and sha256 of its uint16 tokens followed by its int64 offsets.
BEFORE_STREAMING = {
    "paper": {
        "train": (4069, 848039, "339a65bcba316567"),
        "validation": (1162, 231817, "19cd36775306ddcb"),
        "test": (582, 108443, "97e952bd76e98626"),
    },
    "shuffle": {
        "train": (4069, 831430, "8185fb21b160aa7a"),
        "validation": (1162, 237750, "e55f6a3bd67d7efe"),
        "test": (582, 119119, "3fce011e7ecd93df"),
    },
    "source": {
        "train": (4813, 993740, "453ac7e0fc272af2"),
        "validation": (500, 100955, "3321fcdab52a793a"),
        "test": (500, 93604, "9e858a538b13ba24"),
    },
}


@pytest.mark.parametrize("mode", ["paper", "shuffle", "source"])
def test_streaming_gives_the_ids_and_split_boundaries_of_the_in_memory_pipeline(shared_tinystories, cache_dir, mode):
    if mode == "source":
        cfg = DataConfig(
            source=str(shared_tinystories / "tinystories_train_*"),
            split_mode="source",
            cache_dir=cache_dir,
            heldout_source=str(shared_tinystories / "tinystories_valid_first1000.jsonl.gz"),
        )
    else:
        cfg = DataConfig(source=str(shared_tinystories), split_mode=mode, cache_dir=cache_dir)
    assert digests(prepare_data(cfg, 1234, log=lambda *_: None)) == BEFORE_STREAMING[mode]


# ---- builds that fail, and builds shared by several processes --------------------------------------
def big_source(tmp_path, n=150_000):
    """Enough stories that a one-process build takes a few seconds."""
    return write_jsonl(tmp_path / "big.jsonl", [f"{s} Number {i}." for i, s in enumerate(make_stories(n))])


def prepare_command(source, cache, *extra):
    return [
        PYTHON,
        "-m",
        "launch.cli",
        "prepare",
        "--data",
        str(source),
        "--data-cache",
        str(cache),
        "--max-samples",
        "0",
        "--data-workers",
        "1",
        *extra,
    ]


def test_a_killed_build_is_never_read_as_complete_and_the_next_one_starts_clean(tmp_path):
    source, cache = big_source(tmp_path), tmp_path / "cache"
    proc = subprocess.Popen(prepare_command(source, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in cache.glob("tokens/.build-*/source.tokens.bin")):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stdout.read() if proc.poll() is not None else ""
        )
        time.sleep(0.01)
    proc.kill()  # kill -9, mid-build
    proc.wait()
    tokens = cache / "tokens"
    assert not [p for p in tokens.iterdir() if not p.name.startswith(".build-") and not p.name.endswith(".lock")]
    done = subprocess.run(prepare_command(source, cache), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "prepared in" in done.stdout
    assert [p.name for p in tokens.iterdir()] == [done.stdout.split()[-1].rsplit("/", 1)[-1]]  # no leftovers
    again = subprocess.run(prepare_command(source, cache), capture_output=True, text=True, timeout=120)
    assert "cache verified, 150,000 stories" in again.stdout


def test_a_full_disk_stops_the_build_with_one_line_and_leaves_nothing(tmp_path):
    source, cache = big_source(tmp_path, 20_000), tmp_path / "cache"

    def small_disk():  # files may not grow past 100 kB: writes fail as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run(
        prepare_command(source, cache), capture_output=True, text=True, timeout=120, preexec_fn=small_disk
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no room left writing the token cache in")
    assert "--data-cache" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in (cache / "tokens").iterdir() if not p.name.endswith(".lock")] == []


def test_processes_share_one_build_and_the_waiting_one_says_what_it_waits_for(tmp_path):
    source, cache = big_source(tmp_path), tmp_path / "cache"
    procs = [
        subprocess.Popen(prepare_command(source, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    builder, waiter = (0, 1) if "prepared in" in outs[0] else (1, 0)
    assert "prepared in" in outs[builder] and "prepared in" not in outs[waiter]
    assert f"waiting for pid {procs[builder].pid} on {os.uname().nodename}" in outs[waiter]
    assert "tokens from cache" in outs[waiter]
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1]  # the same cache folder
