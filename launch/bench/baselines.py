"""Baselines for `gpt-launch bench`. Benchmark code only: nothing in the product imports this.

(a) `PaperGPT` + `paper_step`: the paper's recipe as its authors wrote it: the same architecture,
    attention written out by hand with a boolean mask, every story padded to 256 tokens, and a
    training step that reads the loss and the token accuracy back to the host every micro-batch.
(b) `hf_gpt2`: transformers' GPT2LMHeadModel of the same size, trained with a plain AdamW step.
(c) `full_logits_rows`: evaluation as it was before the chunked head: the whole (batch x context x
    vocab) logits, a cross-entropy over them and an argmax, per row.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_core import IGNORE_INDEX, GPTConfig
from gpt_core.model import sinusoidal_positions


class _HandwrittenAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.d_k = c.n_head, c.head_dim
        self.q, self.k, self.v = (nn.Linear(c.d_model, c.d_model) for _ in range(3))
        self.out = nn.Linear(c.d_model, c.d_model)
        self.dropout = nn.Dropout(c.attention_dropout)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = (f(x).view(B, T, self.n_head, self.d_k).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask, float("-inf"))
        y = self.dropout(scores.softmax(dim=-1)) @ v
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class _PaperLayer(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.attn = _HandwrittenAttention(c)
        self.ffn = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x, mask):
        x = self.norm1(x + self.dropout(self.attn(x, mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class PaperGPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.register_buffer("pe", sinusoidal_positions(c.context_length, c.d_model), persistent=False)
        self.layers = nn.ModuleList(_PaperLayer(c) for _ in range(c.n_layer))
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        self.scale, self.dropout = math.sqrt(c.d_model), nn.Dropout(c.dropout)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):
        T = idx.shape[1]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=idx.device))
        x = self.dropout(self.embed(idx) * self.scale + self.pe[:T])
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x)


def paper_step(model, optimizer, micro_batches, clip=1.0):
    """One optimizer step the paper's way: loss and accuracy read back after every micro-batch."""
    for x, y in micro_batches:
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX)
        (loss / len(micro_batches)).backward()
        mask = y != IGNORE_INDEX
        _ = loss.item(), ((logits.argmax(-1) == y) & mask).sum().item() / max(mask.sum().item(), 1)
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()


def hf_gpt2(c: GPTConfig):
    """transformers' GPT-2 with the same shape (learned positions: its own design, same size order)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.context_length,
        n_embd=c.d_model,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.d_ff,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.attention_dropout,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def hf_step(model, optimizer, micro_batches, clip=1.0):
    for x, _ in micro_batches:
        loss = model(input_ids=x, labels=x).loss  # GPT-2 shifts labels itself: x predicts x[1:]
        (loss / len(micro_batches)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()


def full_logits_rows(model, x, y):
    """Per row (loss sum, correct, tokens) from the full logits: the evaluation the chunked head replaced."""
    logits = model(x)[0].float()
    mask = y != IGNORE_INDEX
    token_loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")
    correct = (logits.argmax(dim=-1) == y) & mask
    return torch.stack([token_loss.sum(1), correct.sum(1).float(), mask.sum(1).float()], dim=1).double()
