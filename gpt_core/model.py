"""A GPT-2-style decoder, read top to bottom in the order the data flows through it:

    token ids -> embedding * sqrt(d_model) + sinusoidal positions -> dropout
              -> N x [causal self-attention, feed-forward], each wrapped in residual + LayerNorm
              -> output projection tied to the embedding -> logits (and cross-entropy, given targets)

Plain PyTorch only: this package never imports accelerate, deepspeed, wandb or transformers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import GPTConfig
from .fused import FastDecodeLinear, OutputHead


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The fixed encoding of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...).

    Computed, not learned: it adds no parameters, which matters when 58 % of the model is already
    the embedding table.
    """
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to the context.

    With it, generating one more token runs the model over one position instead of the whole prefix.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, config.context_length, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far
        self.capacity = config.context_length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new k, v (B, H, T, hd) after the cached ones; return all of them."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.layer_index = layer_index
        # One fused projection for q, k and v: one large matmul is faster than three small ones.
        self.qkv = FastDecodeLinear(config.d_model, 3 * config.d_model)
        self.proj = FastDecodeLinear(config.d_model, config.d_model)
        self.attn_dropout = config.attention_dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer_index, k, v)
        # SDPA picks flash / memory-efficient kernels on GPU and a fused kernel on CPU; it is the
        # textbook softmax(QK^T / sqrt(d_k)) V (tests compare the two).  Its is_causal flag aligns
        # the mask top-left, which is right only when queries and keys start together, so a
        # multi-token step on top of a cache gets an explicit mask instead.
        if past == 0:
            mask, causal = None, True
        elif T == 1:
            mask, causal = None, False  # one new query may see every cached key
        else:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    """Position-wise d_model -> d_ff -> d_model with GELU, applied to every position alike."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up = FastDecodeLinear(config.d_model, config.d_ff)
        self.down = FastDecodeLinear(config.d_ff, config.d_model)
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn = CausalSelfAttention(config, layer_index)
        self.norm1 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if self.pre_norm:  # x + Sublayer(LN(x))
            x = x + self.dropout(self.attn(self.norm1(x), cache))
            return x + self.dropout(self.ffn(self.norm2(x)))
        # post-LN, the paper's placement: LN(x + Sublayer(x))
        x = self.norm1(x + self.dropout(self.attn(x, cache)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions == "learned":  # GPT-2's table, a parameter like any other
            self.pos_embed = nn.Embedding(config.context_length, config.d_model)
        else:
            table = sinusoidal_positions(config.context_length, config.d_model)
            self.register_buffer("positions", table, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # Post-LN already ends every block in a LayerNorm; pre-LN needs one before the head.
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.head = OutputHead(config.d_model, config.vocab_size)
        self.head.weight = self.embed.weight  # tied: one (vocab x d_model) tensor, 25.7 M params in `paper`
        # With N(0, 0.02) weights a raw embedding is ~50x smaller than the +-1 sinusoids and would be
        # drowned by them; scaling by sqrt(d_model), as Vaswani et al. do, puts the two on a par.
        self.embed_scale = math.sqrt(config.d_model) if config.embed_scale else 1.0
        # Recompute each block in the backward pass instead of keeping its activations: memory for
        # time. torch.utils.checkpoint restores the RNG state, so dropout draws the same masks again.
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields the tied tensor once

    def position_table(self) -> torch.Tensor:
        """(context, d_model): what each position adds to its token's embedding."""
        return self.pos_embed.weight if self.config.positions == "learned" else self.positions

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        measure: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits, loss).

        Without targets: the logits (B, T, vocab) and loss None. With targets: logits None and the
        mean cross-entropy over targets != IGNORE_INDEX, computed by the fused head (training never
        needs the logits themselves); with `measure` as well, per row (loss sum, correct, tokens)
        instead, for evaluation. `cache` continues from the positions already cached;
        `last_only` computes the head for the final position only, all that generation needs.
        """
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.config.context_length}")
        # The positions join in the activations' dtype: an engine that casts parameters but not
        # buffers to bf16 (DeepSpeed, FSDP2's mixed precision) would otherwise get fp32 back here.
        x = self.embed(idx) * self.embed_scale
        x = x + self.position_table()[start : start + T].to(x.dtype)
        x = self.dropout(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x, cache)
        if cache is not None:
            cache.length += T
        x = self.final_norm(x)
        if targets is not None:
            return None, self.head.measure(x, targets) if measure else self.head.loss(x, targets)
        return self.head(x[:, -1:, :] if last_only else x), None
