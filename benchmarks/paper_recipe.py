"""(a) The paper's recipe as its authors wrote it, measured against ours by `gpt-launch bench`'s
own machinery: the same architecture, attention written out by hand with a boolean mask, every story
padded to 256 tokens, and a training step that reads the loss and the token accuracy back to the
host every micro-batch. A repository benchmark (not installed); run it from the repository's root:

    python -m benchmarks.paper_recipe --data ../shared/data/tinystories --rounds 3

It prints `gpt-launch bench`'s table with (a) beside ours and (b) transformers' GPT-2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt_core import IGNORE_INDEX, GPTConfig
from gpt_core.model import sinusoidal_positions
from launch.bench.measure import BUILT_IN, GRAD_CLIP, Implementation, plain_adamw
from launch.bench.run import format_table, run_bench
from launch.settings.commands import BenchSettings

from .results import write_result

IMPLEMENTATIONS = {"ours": BUILT_IN["ours"], "paper": "benchmarks.paper_recipe:PAPER", "hf_gpt2": BUILT_IN["hf_gpt2"]}


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


def paper_step(model, optimizer, micro_batches, precision, clip=GRAD_CLIP):
    """One optimizer step the paper's way: loss and accuracy read back after every micro-batch."""
    with precision.autocast():
        for x, y in micro_batches:
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE_INDEX)
            (loss / len(micro_batches)).backward()
            mask = y != IGNORE_INDEX
            _ = loss.item(), ((logits.argmax(-1) == y) & mask).sum().item() / max(mask.sum().item(), 1)
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()


def _build_paper(config: GPTConfig, device: torch.device, recipe):
    model = PaperGPT(config).to(device)
    return model, plain_adamw(model, recipe)


PAPER = Implementation(
    "(a) the paper's recipe: hand-written masked attention, stories padded to 256, accuracy read back each micro-batch",
    _build_paper,
    paper_step,
    padded_rows=True,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--data", default=None, help="stories whose real lengths are used [default: the smoke stories]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--gen-tokens", type=int, default=300)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--save",
        action="store_true",
        help="keep the result, with its provenance, as benchmarks/results/paper_recipe.json",
    )
    args = parser.parse_args()
    settings = BenchSettings(
        preset=args.preset,
        data=args.data,
        rounds=args.rounds,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        gen_tokens=args.gen_tokens,
    )
    result = run_bench(settings, IMPLEMENTATIONS)
    print(format_table(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.save:
        print(f"saved in {write_result('paper_recipe', result)}")


if __name__ == "__main__":
    main()
