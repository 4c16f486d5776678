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

from .config import GPTConfig

IGNORE_INDEX = -100  # targets with this value (padding) are left out of the loss


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


class Linear(nn.Linear):
    """nn.Linear with a faster path for the one-row products of generation on CPU.

    Generating a token multiplies one row by every weight matrix, so it streams all the weights
    from memory. When a layer widens (out > in), CPU BLAS streams the weight ~2.5x faster stored
    (in x out) than in nn.Linear's (out x in) layout (the 50,257-way head: 9.5 -> 4 ms), so a single
    row without autograd uses a transposed copy; narrowing layers are faster as they are. The copy
    costs one more float per parameter, is made on the first such call, and is rebuilt whenever the
    weight changes (an optimizer step bumps its version).
    """

    _decode_weight: torch.Tensor | None = None
    _decode_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or torch.is_grad_enabled() or x.numel() != x.shape[-1]
                or self.out_features <= self.in_features):
            return super().forward(x)
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        if key != self._decode_key:
            self._decode_weight, self._decode_key = self.weight.detach().t().contiguous(), key
        row = x.reshape(1, -1)
        y = row @ self._decode_weight if self.bias is None else torch.addmm(self.bias, row, self._decode_weight)
        return y.view(*x.shape[:-1], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.layer_index = layer_index
        # One fused projection for q, k and v: one large matmul is faster than three small ones.
        self.qkv = Linear(config.d_model, 3 * config.d_model)
        self.proj = Linear(config.d_model, config.d_model)
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
        self.up = Linear(config.d_model, config.d_ff)
        self.down = Linear(config.d_ff, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


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


class _HeadCrossEntropy(torch.autograd.Function):
    """Output projection + mean cross-entropy in one pass that also writes both gradients.

    Unfused, the (tokens x 50,257) logits are kept for the backward pass and the softmax is
    computed twice (log_softmax forward, then its backward); here each chunk of logits lives only
    while its gradient, softmax - one_hot, is turned into the hidden and weight gradients. On CPU
    that removed about a third of a `paper` training step (2.3 s -> 1.45 s per micro-batch of 512
    tokens, profiled); on a GPU it also saves the logits' memory.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows):
        valid = targets != IGNORE_INDEX
        count = valid.sum().clamp(min=1).to(torch.float32)
        grad_hidden = torch.empty_like(hidden)
        grad_weight, loss_sum = None, torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h, t, keep = (a[start : start + chunk_rows] for a in (hidden, targets, valid))
            logits = (h @ weight.t()).float()
            row_max = logits.amax(dim=-1, keepdim=True)
            safe_t = t.clamp(min=0).unsqueeze(1)
            target_logit = logits.gather(1, safe_t)
            # In place: the logits become the probabilities, so no second chunk-sized buffer is
            # allocated (on CPU each fresh 100 MB buffer costs ~25,000 page faults).
            probs = logits.sub_(row_max).exp_()  # the only exp pass over this chunk
            total = probs.sum(dim=-1, keepdim=True)
            loss_sum += ((row_max + total.log() - target_logit).squeeze(1) * keep).sum()
            probs.div_(total)
            probs.scatter_add_(1, safe_t, torch.full_like(target_logit, -1.0))
            probs.mul_((keep / count).unsqueeze(1))  # d(mean loss)/d(logits); ignored rows become 0
            probs = probs.to(h.dtype)
            grad_hidden[start : start + chunk_rows] = probs @ weight
            chunk_grad = probs.t() @ h
            grad_weight = chunk_grad.float() if grad_weight is None else grad_weight.add_(chunk_grad)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss_sum / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden.mul_(grad_loss), grad_weight.mul_(grad_loss), None, None


class OutputHead(Linear):
    """The projection to vocabulary logits; with targets, the fused loss instead of the logits."""

    def __init__(self, d_model: int, vocab_size: int, chunk_rows: int = 2048):
        super().__init__(d_model, vocab_size, bias=False)
        self.chunk_rows = chunk_rows  # caps the live logits at chunk_rows x vocab floats

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = hidden.reshape(-1, hidden.shape[-1])
        targets = targets.reshape(-1)
        if not torch.is_grad_enabled():
            logits = self(hidden)
            return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
        return _HeadCrossEntropy.apply(hidden, self.weight, targets, self.chunk_rows)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.register_buffer(
            "positions", sinusoidal_positions(config.context_length, config.d_model), persistent=False
        )
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # Post-LN already ends every block in a LayerNorm; pre-LN needs one before the head.
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.head = OutputHead(config.d_model, config.vocab_size)
        self.head.weight = self.embed.weight  # tied: one (vocab x d_model) tensor, 25.7 M params in `paper`
        # With N(0, 0.02) weights a raw embedding is ~50x smaller than the +-1 sinusoids and would be
        # drowned by them; scaling by sqrt(d_model), as Vaswani et al. do, puts the two on a par.
        self.embed_scale = math.sqrt(config.d_model)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() yields the tied tensor once

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits, loss).

        Without targets: the logits (B, T, vocab) and loss None. With targets: logits None and the
        mean cross-entropy over targets != IGNORE_INDEX, computed by the fused head (training never
        needs the logits themselves). `cache` continues from the positions already cached;
        `last_only` computes the head for the final position only, all that generation needs.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds the context length {self.config.context_length}"
            )
        x = self.embed(idx) * self.embed_scale + self.positions[start : start + T]
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        x = self.final_norm(x)
        if targets is not None:
            return None, self.head.loss(x, targets)
        return self.head(x[:, -1:, :] if last_only else x), None
