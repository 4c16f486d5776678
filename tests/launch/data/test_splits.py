"""launch.data.splits: where the stream is cut, and splits read back as one."""

import numpy as np
import pytest

from launch.data.splits import concat_splits
from tests.helpers import write_jsonl

from .common import STORIES, all_text, prepared, story_texts


def cut_as_a_list(stories: list, mode: str, seed: int = 1234, train=0.7, validation=0.2) -> dict:
    """What cutting the whole list of stories gives: in order, after a seeded permutation for shuffle."""
    if mode == "shuffle":
        stories = [stories[i] for i in np.random.default_rng(seed).permutation(len(stories))]
    n_train, n_val = int(len(stories) * train), int(len(stories) * validation)
    return {
        "train": stories[:n_train],
        "validation": stories[n_train : n_train + n_val],
        "test": stories[n_train + n_val :],
    }


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
    assert a == cut_as_a_list(STORIES, mode)


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


def test_concat_splits_keeps_every_story_boundary(tmp_path, cache_dir):
    p = prepared(write_jsonl(tmp_path / "s.jsonl", STORIES), cache_dir)
    whole = concat_splits(p.splits.values())
    assert whole.num_stories == 60
    assert story_texts(whole) == STORIES
