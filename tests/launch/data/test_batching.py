import numpy as np
import pytest
import torch

from gpt_core import EOT_ID, IGNORE_INDEX
from launch.data.batching import DocumentsDataset, EpochShuffleSampler, PackedDataset, PaddedDataset, make_dataloader
from launch.data.splits import TokenSplit
from launch.errors import UserError
from tests.helpers import write_jsonl

from .common import STORIES, prepared


def split_of(lengths):
    tokens = np.concatenate([np.r_[np.arange(1, n, dtype=np.uint16) + 100 * i, EOT_ID] for i, n in enumerate(lengths)])
    return TokenSplit("train", tokens.astype(np.uint16), np.r_[0, np.cumsum(lengths)].astype(np.int64), EOT_ID)


def test_packed_rows_are_shifted_windows_covering_every_transition():
    split = split_of([7, 9, 5, 12])  # 33 tokens
    ds = PackedDataset(split, 8)
    assert len(ds) == 4  # (33 - 1) // 8
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    stream = torch.from_numpy(split.tokens.astype(np.int64))
    assert torch.equal(torch.cat(xs), stream[:32]) and torch.equal(torch.cat(ys), stream[1:33])
    assert all(x.shape == (8,) and x.dtype == torch.long for x in xs)


def test_document_rows_score_each_story_alone_in_rolling_windows():
    split = split_of([4, 11])  # texts of 3 and 10 tokens, each followed by <|endoftext|>
    ds = DocumentsDataset(split, 4)
    assert len(ds) == 1 + 3  # 3 tokens fit one window; 10 take 4 + 4 + 2
    rows = [tuple(t.tolist() for t in ds[i]) for i in range(len(ds))]
    first, second = [1, 2, 3], [101 + i for i in range(10)]
    pad = IGNORE_INDEX
    assert rows[0] == ([EOT_ID, 1, 2, EOT_ID], [1, 2, 3, pad])  # after <|endoftext|>; its own end not predicted
    assert rows[1] == ([EOT_ID, *second[:3]], second[:4])
    assert rows[2] == (second[3:7], second[4:8])  # each window after the tokens just before it
    assert rows[3] == (second[5:9], [pad, pad, *second[8:10]])  # the last: the context full, 2 targets
    targets = [t for _, y in rows for t in y if t != pad]
    assert targets == first + second  # every token of every text, once


def test_padded_rows_mask_padding_and_count_truncation():
    split = split_of([4, 12, 9])
    ds = PaddedDataset(split, 8)
    assert ds.truncated == 1  # the 12-token story is longer than context + 1
    x, y = ds[0]
    assert x[:3].tolist() == split.tokens[0:3].tolist() and y[:3].tolist() == split.tokens[1:4].tolist()
    assert (y[3:] == IGNORE_INDEX).all() and (x[3:] == EOT_ID).all()
    x, y = ds[1]
    assert (y != IGNORE_INDEX).all() and y[-1] == split.tokens[4 + 8]
    x, y = ds[2]  # the last story: its window would run past the stream's end
    assert x[:8].tolist() == split.tokens[16:24].tolist() and y[:8].tolist() == split.tokens[17:25].tolist()
    assert ds.padding_fraction == pytest.approx(1 - (3 + 8 + 8) / 24)


@pytest.mark.parametrize("dataset", [PackedDataset, PaddedDataset])
def test_a_micro_batch_is_fetched_at_once_as_the_rows_one_by_one(dataset):
    ds = dataset(split_of([7, 9, 5, 12, 3, 20]), 8)
    rows = [3, 0, 2, 2]
    x, y = ds.__getitems__(rows)
    assert torch.equal(x, torch.stack([ds[i][0] for i in rows])) and torch.equal(
        y, torch.stack([ds[i][1] for i in rows])
    )
    loader = make_dataloader(ds, 2, seed=0, shuffle=True, drop_last=True)
    batches = list(loader)
    assert all(bx.shape == (2, 8) and by.shape == (2, 8) for bx, by in batches) and len(batches) == len(ds) // 2


def test_epoch_shuffle_is_seeded_changes_per_epoch_and_is_an_array_not_a_list():
    s = EpochShuffleSampler(50, seed=3)
    e0 = list(s)
    assert e0 == list(EpochShuffleSampler(50, seed=3)) and sorted(e0) == list(range(50))
    assert type(iter(s)).__name__ != "list_iterator"  # 8 bytes a row, not a Python int each
    s.set_epoch(1)
    assert list(s) != e0
    # the same permutation as torch.randperm from the same seed, as before: resumed runs stay exact
    assert [int(i) for i in e0] == torch.randperm(50, generator=torch.Generator().manual_seed(3 * 100_003)).tolist()


def test_split_smaller_than_one_row(tmp_path, cache_dir):
    p = prepared(write_jsonl(tmp_path / "s.jsonl", STORIES[:10]), cache_dir)
    with pytest.raises(UserError, match="fewer tokens than one packed row"):
        make_dataloader(PackedDataset(p.splits["test"], 4096), 2, 0, False, False)
