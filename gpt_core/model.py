"""A GPT-2-style decoder, read top to bottom in the order the data flows through it:

    token ids -> embedding * sqrt(d_model) + sinusoidal positions -> dropout
              -> N x [causal self-attention, feed-forward], each wrapped in residual + LayerNorm
              -> output projection tied to the embedding -> logits (and cross-entropy, given targets)

That is the paper's block. Each part has the alternative small models use today, a GPTConfig field
away (the `llama-small` preset takes them all): rotary positions inside attention instead of added
ones, RMSNorm, a SwiGLU or ReLU² feed-forward, fewer key/value heads than query heads, RMSNorm of
queries and keys, no biases, an untied output layer.

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


def rotary_tables(length: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_dim) of RoPE (Su et al.): position p turns the pair of features
    (i, i + head_dim/2) by the angle p * base^(-2i/head_dim). The pairs are the two halves of a head,
    as transformers' Llama pairs them, so weights travel to it unpermuted."""
    # In float32 as transformers computes it, so an exported model's logits match to rounding.
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd) with each position's pairs turned by its angles (cos, sin: (T, hd))."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.normalization == "rmsnorm":  # x / rms(x) * gain: LayerNorm without centring or bias
        return nn.RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to the context.

    With it, generating one more token runs the model over one position instead of the whole prefix.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype):
        shape = (config.n_layer, batch_size, config.kv_heads, config.context_length, config.head_dim)
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
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.layer_index = layer_index
        # One fused projection for q, k and v: one large matmul is faster than three small ones.
        # Its output is [q | k | v]; with grouped-query attention k and v have fewer heads than q.
        kv_width = self.n_kv_head * self.head_dim
        self.split = (config.d_model, kv_width, kv_width)
        self.qkv = FastDecodeLinear(config.d_model, config.d_model + 2 * kv_width, bias=config.bias)
        self.proj = FastDecodeLinear(config.d_model, config.d_model, bias=config.bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps) if config.qk_norm else None
        self.attn_dropout = config.attention_dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, rotary=None) -> torch.Tensor:
        """x (B, T, C); `rotary`: the (cos, sin) of these T positions when positions are rotary."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:  # before caching: a cached key keeps the rotation of its own position
            q, k = rotate(q, *rotary), rotate(k, *rotary)
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
        # With fewer key/value heads, each serves n_head / n_kv_head query heads (enable_gqa).
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.attn_dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    """Position-wise d_model -> d_ff -> d_model, applied to every position alike: GELU (the paper),
    ReLU² (relu(x)²), or SwiGLU: silu(gate) * up, with gate and up one fused 2 x d_ff projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.activation = config.activation
        width = 2 * config.d_ff if config.gated else config.d_ff
        self.up = FastDecodeLinear(config.d_model, width, bias=config.bias)
        self.down = FastDecodeLinear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.down(h)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn = CausalSelfAttention(config, layer_index)
        self.norm1 = make_norm(config, config.d_model)
        self.ffn = FeedForward(config)
        self.norm2 = make_norm(config, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, rotary=None) -> torch.Tensor:
        if self.pre_norm:  # x + Sublayer(LN(x))
            x = x + self.dropout(self.attn(self.norm1(x), cache, rotary))
            return x + self.dropout(self.ffn(self.norm2(x)))
        # post-LN, the paper's placement: LN(x + Sublayer(x))
        x = self.norm1(x + self.dropout(self.attn(x, cache, rotary)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions == "learned":  # GPT-2's table, a parameter like any other
            self.pos_embed = nn.Embedding(config.context_length, config.d_model)
        elif config.positions == "sinusoidal":
            table = sinusoidal_positions(config.context_length, config.d_model)
            self.register_buffer("positions", table, persistent=False)
        else:  # rotary: nothing is added to the embeddings; attention turns queries and keys
            cos, sin = rotary_tables(config.context_length, config.head_dim, config.rope_base)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # Post-LN already ends every block in a LayerNorm; pre-LN needs one before the head.
        self.final_norm = make_norm(config, config.d_model) if config.norm == "pre" else nn.Identity()
        self.head = OutputHead(config.d_model, config.vocab_size)
        if config.tie_embeddings:  # one (vocab x d_model) tensor, 25.7 M params in `paper`
            self.head.weight = self.embed.weight
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

    def position_table(self) -> torch.Tensor | None:
        """(context, d_model): what each position adds to its token's embedding (None: rotary)."""
        if self.config.positions == "rope":
            return None
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
        table, rotary = self.position_table(), None
        if table is not None:
            x = x + table[start : start + T].to(x.dtype)
        else:
            rotary = (self.rotary_cos[start : start + T], self.rotary_sin[start : start + T])
        x = self.dropout(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for block in self.blocks:
            x = checkpoint(block, x, None, rotary, use_reentrant=False) if recompute else block(x, cache, rotary)
        if cache is not None:
            cache.length += T
        x = self.final_norm(x)
        if targets is not None:
            return None, self.head.measure(x, targets) if measure else self.head.loss(x, targets)
        return self.head(x[:, -1:, :] if last_only else x), None
