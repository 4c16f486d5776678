"""Stage 3: rows of token ids, served straight from the memory-mapped cache.

Both layouts fetch a whole micro-batch at once (`__getitems__`): one vectorised gather from the
memory map instead of one Python call, one tensor and one `torch.stack` per row. The sampler keeps
an epoch's permutation as one int64 array (8 bytes a row), never a Python list of every index.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gpt_core import IGNORE_INDEX
from launch.errors import UserError

from .splits import TokenSplit


class PackedDataset(Dataset):
    """The token stream cut into windows of context + 1 (stride context): inputs and targets shifted
    by one, no padding, every next-token transition trained once; only the final partial window is lost."""

    def __init__(self, split: TokenSplit, context: int):
        self.tokens, self.context = split.tokens, context
        self.count = max((len(split.tokens) - 1) // context, 0)
        self.real_tokens_per_row = context
        self._span = np.arange(context + 1, dtype=np.int64)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, rows):
        starts = np.asarray(rows, dtype=np.int64) * self.context
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._span].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class PaddedDataset(Dataset):
    """One story per row, truncated to the context and padded (the paper's layout). Padding targets
    are IGNORE_INDEX, so the loss and every metric skip them."""

    def __init__(self, split: TokenSplit, context: int):
        self.split, self.context = split, context
        lengths = split.story_lengths
        self.truncated = int((lengths > context + 1).sum())
        targets_per_row = np.minimum(lengths, context + 1) - 1
        self.padding_fraction = 1.0 - float(targets_per_row.sum()) / max(len(lengths) * context, 1)
        self._span = np.arange(context + 1, dtype=np.int64)

    def __len__(self) -> int:
        return self.split.num_stories

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.split.offsets[rows], self.split.offsets[rows + 1]
        targets = np.minimum(ends - starts, self.context + 1)[:, None] - 1  # real targets per row
        index = np.minimum(starts[:, None] + self._span, len(self.split.tokens) - 1)
        windows = self.split.tokens[index].astype(np.int64)
        real = self._span[None, :-1] < targets
        x = np.where(real, windows[:, :-1], self.split.eot_id)
        y = np.where(real, windows[:, 1:], IGNORE_INDEX)
        return torch.from_numpy(x), torch.from_numpy(y)


class DocumentsDataset(Dataset):
    """Each story scored on its own, as lm-evaluation-harness scores a document: every token of its
    text predicted once, the first after <|endoftext|>, its closing separator not; a story longer
    than the context is scored in windows, each after as many earlier tokens as fit (the harness's
    rolling windows with context_len 1). Positions a window does not predict are IGNORE_INDEX."""

    def __init__(self, split: TokenSplit, context: int):
        self.split, self.context = split, context
        text_lengths = split.story_lengths - 1  # the closing <|endoftext|> is not text
        self.windows = []  # (story, end of the window's targets, targets in it)
        for story, length in enumerate(text_lengths.tolist()):
            done = min(context, length)
            self.windows.append((story, done, done))
            while done < length:
                step = min(length - done, context)
                done += step
                self.windows.append((story, done, step))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, rows):
        x = np.full((len(rows), self.context), self.split.eot_id, dtype=np.int64)
        y = np.full((len(rows), self.context), IGNORE_INDEX, dtype=np.int64)
        for r, i in enumerate(rows):
            story, end, count = self.windows[i]
            start = int(self.split.offsets[story])
            text = np.asarray(self.split.tokens[start : start + end], dtype=np.int64)
            # what precedes each target
            history = np.concatenate([[self.split.eot_id], text])[max(0, end - self.context) : end]
            x[r, : len(history)] = history
            y[r, len(history) - count : len(history)] = text[end - count : end]
        return torch.from_numpy(x), torch.from_numpy(y)


LAYOUTS = {"packed": PackedDataset, "padded": PaddedDataset, "documents": DocumentsDataset}


def make_dataset(split: TokenSplit, context: int, layout: str) -> Dataset:
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return LAYOUTS[layout](split, context)


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
        return iter(torch.randperm(self.length, generator=generator).numpy())


def _already_batched(batch):
    return batch  # the datasets' __getitems__ return (inputs, targets) for the whole micro-batch


def make_dataloader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool, drop_last: bool, pin_memory=False):
    if len(dataset) == 0:
        raise UserError(
            f"a split holds fewer tokens than one {type(dataset).__name__.replace('Dataset', '').lower()} row; "
            "give --data more stories, or a shorter context_length in a --model-config file"
        )
    sampler = EpochShuffleSampler(len(dataset), seed, shuffle)
    # Each new iterator of a DataLoader draws a base seed from its `generator`, or from the global
    # torch RNG when it has none. That RNG also drives dropout, and a resumed run opens its epoch's
    # iterator at a different moment than an uninterrupted one (and validation opens one per
    # evaluation): with a draw from the global RNG there, dropout masks after a resume would differ.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=_already_batched,
        generator=torch.Generator().manual_seed(seed),
    )


def make_loaders(splits: dict, context: int, layout: str, batch_size: int, seed: int, pin_memory: bool, log) -> dict:
    """A training run's loaders, one per split: the train split shuffled each epoch and cut to full
    batches, the others in order and whole."""
    datasets = {name: make_dataset(split, context, layout) for name, split in splits.items()}
    if layout == "padded":
        d = datasets["train"]
        log(
            f"data: padded layout, {d.truncated:,} train stories truncated to {context} tokens, "
            f"{d.padding_fraction:.1%} of train positions are padding"
        )
    return {
        name: make_dataloader(
            ds, batch_size, seed, shuffle=name == "train", drop_last=name == "train", pin_memory=pin_memory
        )
        for name, ds in datasets.items()
    }
