"""Loss, perplexity, token accuracy and bits per byte, counted over real target tokens only.

Each process sums per-row (loss, correct, tokens); rows are gathered with `gather_for_metrics`,
which drops the samples Accelerate repeats to even out the last batch, so no token is counted twice.
Perplexity is exp(total loss / total tokens): the mean over tokens, not a mean of batch means.
The model measures each row through its chunked head (`measure=True`), so the (batch x context x
vocabulary) logits never exist at once: evaluation is cheaper than training in both time and memory.

Bits per byte is the total loss in bits over the UTF-8 bytes of the text the target tokens stand for
(the <|endoftext|> separator between stories stands for no text: 0 bytes). Unlike perplexity it does
not depend on the tokenizer, so it compares with models that use another one.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from gpt_core import IGNORE_INDEX, Tokenizer
from launch.progress import progress


@functools.lru_cache(maxsize=4)
def byte_lengths(tokenizer: Tokenizer, device: torch.device) -> torch.Tensor:
    """UTF-8 bytes of the text each token id stands for, the end-of-text separator counting 0."""
    lengths = [len(tokenizer.decode_bytes([i])) for i in range(tokenizer.vocab_size)]
    lengths[tokenizer.eot_id] = 0
    return torch.tensor(lengths, dtype=torch.float64, device=device)


def perplexity(loss: float) -> float:
    """exp(loss), held at e^700 (a float's range ends near e^709): a loss that high is hopeless anyway."""
    return math.exp(min(loss, 700))


def metrics_text(m: dict) -> str:
    """The one way metrics are printed: training's validations, a run's test, `gpt-launch evaluate`."""
    return (
        f"loss {m['loss']:.4f} perplexity {m['perplexity']:.2f} accuracy {m['accuracy']:.4f} "
        f"bits per byte {m['bits_per_byte']:.4f} ({m['tokens']:,} target tokens, {m['bytes']:,} bytes of text)"
    )


@torch.no_grad()
def evaluate(
    model, dataloader, accelerator, tokenizer: Tokenizer, max_batches: int | None = None, desc: str | None = None
) -> dict:
    """`tokenizer` gives each token's bytes; `max_batches` caps the batches per process; `desc` shows
    progress (main process)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
    lengths = byte_lengths(tokenizer, accelerator.device)
    total = len(dataloader) if max_batches is None else min(max_batches, len(dataloader))
    shown = desc is not None and accelerator.is_local_main_process
    # Under --compile, evaluation runs eagerly: compiling it would cost two graphs more than the
    # training step's (no-grad, then again for the last, smaller batch), paid before the first
    # validation, for batches that are a small share of a run's time.
    eager = torch.compiler.set_stance("force_eager")
    with eager, progress(total, desc or "", "batch", enabled=shown, leave=False) as bar:
        for x, y in itertools.islice(dataloader, max_batches):
            with accelerator.autocast():
                _, rows = model(x, y, measure=True)  # (batch, 3): loss sum, correct, tokens per row
            real = y != IGNORE_INDEX
            row_bytes = torch.where(real, lengths[y.clamp(min=0)], 0.0).sum(1, keepdim=True)
            rows = torch.cat([rows.to(torch.float64), row_bytes], dim=1)  # and the text's bytes per row
            totals += accelerator.gather_for_metrics(rows).sum(0)
            bar.update(1)
    model.train(was_training)
    loss_sum, correct, tokens, text_bytes = totals.tolist()
    if tokens == 0:
        nan = float("nan")
        return {"loss": nan, "perplexity": nan, "accuracy": nan, "bits_per_byte": nan, "tokens": 0, "bytes": 0}
    loss = loss_sum / tokens
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        "accuracy": correct / tokens,
        "bits_per_byte": loss_sum / math.log(2) / text_bytes if text_bytes else float("nan"),
        "tokens": int(tokens),
        "bytes": int(text_bytes),
    }
