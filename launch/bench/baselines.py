"""The references `gpt-launch bench` measures ours against, with nothing but the installed packages:

(b) `HF_GPT2`: transformers' GPT2LMHeadModel of the same size, trained with a plain AdamW step
    (measured when transformers is installed).

(c), evaluation as it was before the chunked head (the whole logits), is measure.py's
`full_logits_rows`, beside the evaluation it is measured against.

(a), the paper's recipe as its authors wrote it, is a repository benchmark: benchmarks/paper_recipe.py.
"""

from __future__ import annotations

import torch

from gpt_core import GPTConfig

from .measure import GRAD_CLIP, Implementation, plain_adamw


def hf_gpt2(c: GPTConfig):
    """transformers' GPT-2 with the same shape (learned positions: its own design, same size order)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt_core.hf import gpt2_shape

    return GPT2LMHeadModel(GPT2Config(**gpt2_shape(c), n_inner=c.d_ff))


def _build_hf(config: GPTConfig, device: torch.device, recipe):
    model = hf_gpt2(config).to(device)
    return model, plain_adamw(model, recipe)


def hf_step(model, optimizer, micro_batches, precision, clip=GRAD_CLIP):
    with precision.autocast():
        for x, _ in micro_batches:
            loss = model(input_ids=x, labels=x).loss  # GPT-2 shifts labels itself: x predicts x[1:]
            (loss / len(micro_batches)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()


HF_GPT2 = Implementation(
    "(b) transformers GPT2LMHeadModel, same size, packed rows, plain AdamW step",
    _build_hf,
    hf_step,
    useful=lambda y: y.shape[0] * (y.shape[1] - 1),  # GPT-2 predicts T-1 of its T inputs
)
