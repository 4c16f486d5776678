import hashlib
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest

from launch.data.prepare import prepare_data
from launch.errors import UserError
from launch.settings.config import SMOKE_DATA, DataConfig
from tests.helpers import PYTHON, make_stories, write_jsonl

from .common import STORIES, all_text, prepared


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


def test_the_cache_of_one_tokenizer_is_never_served_for_another(tmp_path, cache_dir, story_tokenizer):
    source = write_jsonl(tmp_path / "s.jsonl", STORIES)
    gpt2 = prepared(source, cache_dir)
    story = prepared(source, cache_dir, tokenizer=str(story_tokenizer))
    assert not story.from_cache and story.cache_dir != gpt2.cache_dir
    assert story.meta["tokenizer"]["fingerprint"] == story.tokenizer.fingerprint != gpt2.tokenizer.fingerprint
    assert story.splits["train"].tokens.dtype == np.uint16 and story.splits["train"].eot_id == story.tokenizer.eot_id
    assert all_text(story) == all_text(gpt2)  # the same stories, other ids
    assert story.splits["train"].tokens.max() < 512 < gpt2.splits["train"].tokens.max()
    copy = tmp_path / "copied-tokenizer.json"  # the same tokenizer elsewhere (a run's copy): the same cache
    copy.write_bytes((story_tokenizer / "tokenizer.json").read_bytes())
    again = prepared(source, cache_dir, tokenizer=str(copy))
    assert again.from_cache and again.cache_dir == story.cache_dir
    meta = story.cache_dir / "meta.json"  # a cache whose record says another tokenizer is not read
    meta.write_text(meta.read_text().replace(story.tokenizer.fingerprint, gpt2.tokenizer.fingerprint))
    with pytest.raises(UserError, match="was not built with the 512-token BPE"):
        prepared(source, cache_dir, tokenizer=str(story_tokenizer))


def test_smoke_data_ships_with_the_package(cache_dir):
    p = prepared(SMOKE_DATA, cache_dir)
    assert all(split.num_stories > 0 for split in p.splits.values())


def test_all_stories_dropped(tmp_path, cache_dir):
    reasons = r"3 dropped: 1 empty, 2 shorter than 20 characters\); give --data more stories"
    with pytest.raises(UserError, match=r"split is empty \(3 stories read, " + reasons):
        prepared(write_jsonl(tmp_path / "s.jsonl", ["hi", "", "ok"]), cache_dir)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
