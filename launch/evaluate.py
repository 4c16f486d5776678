"""Loss, perplexity and token accuracy, counted over real target tokens only.

Each process sums per-row (loss, correct, tokens); rows are gathered with `gather_for_metrics`,
which drops the samples Accelerate repeats to even out the last batch, so no token is counted twice.
Perplexity is exp(total loss / total tokens): the mean over tokens, not a mean of batch means.
The model measures each row through its chunked head (`measure=True`), so the (batch x context x
50,257) logits never exist at once: evaluation is cheaper than training in both time and memory.
"""

from __future__ import annotations

import itertools
import math

import torch


@torch.no_grad()
def evaluate(model, dataloader, accelerator, max_batches: int | None = None, desc: str | None = None) -> dict:
    """`max_batches` caps the batches per process; `desc` shows a progress bar (main process)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    batches = itertools.islice(dataloader, max_batches)
    if desc is not None:
        from tqdm.auto import tqdm

        total = len(dataloader) if max_batches is None else min(max_batches, len(dataloader))
        batches = tqdm(
            batches,
            total=total,
            desc=desc,
            unit="batch",
            dynamic_ncols=True,
            leave=False,
            disable=not accelerator.is_local_main_process,
        )
    for x, y in batches:
        with accelerator.autocast():
            _, rows = model(x, y, measure=True)  # (batch, 3): loss sum, correct, tokens per row
        totals += accelerator.gather_for_metrics(rows).sum(0)
    model.train(was_training)
    loss_sum, correct, tokens = totals.tolist()
    if tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "accuracy": float("nan"), "tokens": 0}
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "accuracy": correct / tokens, "tokens": int(tokens)}
