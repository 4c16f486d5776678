"""`gpt-launch tokenizer train`: a byte-level BPE trained on the train split of the stories.

The train split is exactly the one a run trains on (cleaned, deduplicated, cut in order or
shuffled, as the data settings say): its stories are read back from the GPT-2 token cache of the
same settings (built first when missing) and decoded a block at a time, so no validation or test
story reaches the trainer, and memory stays bounded however big the corpus. The trainer, the
`tokenizers` library's BpeTrainer, keeps counts of distinct words, never the text.

Every byte is a token of its own (the byte-level alphabet), so any text encodes and decodes back
byte for byte; `<|endoftext|>` is reserved, as id 0.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gpt_core import Tokenizer, get_tokenizer
from gpt_core.tokenizer import EOT, TOKENIZER_NAME, TrainedTokenizer, byte_level_bpe
from launch.errors import UserError, check_writable
from launch.settings.config import DataConfig

from .prepare import prepare_data
from .splits import TokenSplit

STORIES_PER_BLOCK = 1024  # stories decoded and handed to the trainer at once
MEASURED_STORIES = 2000  # validation stories whose tokens per story the report compares


MAX_VOCAB = 2**20  # far past what a story corpus yields, far below what would exhaust memory


def split_texts(split: TokenSplit, tokenizer: Tokenizer | None = None) -> Iterator[list[str]]:
    """The stories of a token split as text, in blocks (their closing <|endoftext|> dropped);
    `tokenizer` is the split's [default: GPT-2 BPE]."""
    offsets, tokenizer = split.offsets, tokenizer or get_tokenizer()
    for first in range(0, split.num_stories, STORIES_PER_BLOCK):
        last = min(first + STORIES_PER_BLOCK, split.num_stories)
        yield [
            tokenizer.decode_bytes(split.tokens[offsets[i] : offsets[i + 1] - 1].tolist()).decode("utf-8")
            for i in range(first, last)
        ]


def train_tokenizer(
    cfg: DataConfig, seed: int, vocab_size: int, output: str | Path, log: Callable[[str], None] = print
) -> Path:
    """Train on the train split of `cfg`'s stories; write OUTPUT/tokenizer.json (atomically) and
    report tokens per validation story against GPT-2 BPE's."""
    from tokenizers import models, pre_tokenizers, trainers

    target = Path(output) / TOKENIZER_NAME
    if vocab_size < 257:
        raise UserError(f"--vocab-size must be at least 257 (256 bytes and {EOT}), got {vocab_size}; give 257 or more")
    if vocab_size > MAX_VOCAB:
        raise UserError(
            f"--vocab-size must be at most {MAX_VOCAB:,}, got {vocab_size:,}: the trainer reserves memory for every "
            "token asked for (~70 GB for a billion); story corpora run out of merges long before (4,096 is typical)"
        )
    check_writable(output, "--output")
    if target.exists():
        raise UserError(f"{target} already exists; choose another --output or delete it")
    splits = prepare_data(dataclasses.replace(cfg, tokenizer=None), seed, log=log).splits
    train = splits["train"]
    log(f"tokenizer: training a {vocab_size:,}-token byte-level BPE on the {train.num_stories:,} train stories")
    start = time.perf_counter()
    backend = byte_level_bpe(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(split_texts(train), trainer=trainer, length=train.num_stories)
    trained = TrainedTokenizer(target, json.loads(backend.to_str()))  # checked as every tokenizer.json is
    target.parent.mkdir(parents=True, exist_ok=True)
    trained.save(target.parent)
    if trained.vocab_size < vocab_size:
        log(f"tokenizer: the stories hold only {trained.vocab_size:,} distinct tokens' worth of merges")
    log(f"tokenizer: {trained.describe()} written in {time.perf_counter() - start:.1f} s")
    log(compression_report(trained, splits["validation"]))
    return target


def compression_report(trained, validation: TokenSplit) -> str:
    """Tokens per story and bytes per token on (the first stories of) the validation split."""
    texts = list(itertools.chain.from_iterable(split_texts(_first(validation, MEASURED_STORIES))))
    n_bytes = sum(len(t.encode()) for t in texts)
    counts = {
        name: sum(len(tok.encode(t)) + 1 for t in texts) for name, tok in (("new", trained), ("gpt2", get_tokenizer()))
    }
    per_story = {k: v / max(len(texts), 1) for k, v in counts.items()}
    return (
        f"tokenizer: {len(texts):,} validation stories: {per_story['new']:.1f} tokens per story "
        f"({n_bytes / counts['new']:.2f} bytes per token); GPT-2 BPE: {per_story['gpt2']:.1f} "
        f"({n_bytes / counts['gpt2']:.2f} bytes per token)"
    )


def _first(split: TokenSplit, stories: int) -> TokenSplit:
    n = min(stories, split.num_stories)
    return TokenSplit(split.name, split.tokens, split.offsets[: n + 1], split.eot_id)
