"""Text generation: temperature, top-k and top-p (nucleus) sampling with a KV cache.

The cache makes each new token cost one position instead of the whole prefix.  Positions are
absolute (sinusoidal), so once the output outgrows the context the cached keys no longer sit at the
right positions: we then re-encode the most recent 3/4 of a context and continue from there.  Each
token thus sees between 3/4 of a context and a full one, and a re-encode happens once every
context/4 tokens instead of on every token as in a cache-less sliding window.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .model import GPT, KVCache
from .tokenizer import EOT_ID


class GenerationError(ValueError):
    """Generation arguments that cannot work; the message says which and why."""


def check_generation_args(prompt_ids, max_new_tokens, temperature, top_k, top_p, greedy, context_length) -> None:
    if len(prompt_ids) == 0:
        raise GenerationError("the prompt is empty; give at least one token of text")
    if len(prompt_ids) > context_length:
        raise GenerationError(
            f"the prompt has {len(prompt_ids)} tokens but the model's context is {context_length}; shorten it"
        )
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not greedy:
        if not temperature > 0:
            raise GenerationError(
                f"temperature must be > 0 when sampling, got {temperature}; use --greedy (greedy=True) for the most "
                "likely token instead"
            )
        if top_k is not None and top_k < 1:
            raise GenerationError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set whose mass >= top_p."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass *before* it already reaches top_p; the top token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.inference_mode()
def generate_stream(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int = 300,
    temperature: float = 1.0,
    top_k: int | None = 40,
    top_p: float | None = 0.95,
    eos_id: int | None = EOT_ID,
    seed: int | None = None,
    greedy: bool = False,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time, stopping after eos_id (which is yielded) or max_new_tokens."""
    context = model.config.context_length
    check_generation_args(prompt_ids, max_new_tokens, temperature, top_k, top_p, greedy, context)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    was_training = model.training
    model.eval()
    tokens = list(prompt_ids)
    cache = None
    try:
        for _ in range(max_new_tokens):
            if not use_cache:  # reference path: re-run the whole (cropped) prefix every token
                logits, _ = model(torch.tensor([tokens[-context:]], device=device), last_only=True)
            elif cache is None or cache.length == context:
                window = tokens if cache is None else tokens[-(context - context // 4) :]
                cache = KVCache(model.config, 1, device, next(model.parameters()).dtype)
                logits, _ = model(torch.tensor([window], device=device), cache=cache, last_only=True)
            else:
                logits, _ = model(torch.tensor([tokens[-1:]], device=device), cache=cache, last_only=True)
            logits = logits[0, -1].float()
            if greedy:
                next_id = int(logits.argmax())
            else:
                probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            tokens.append(next_id)
            yield next_id
            if eos_id is not None and next_id == eos_id:
                return
    finally:
        model.train(was_training)


def generate(model: GPT, prompt_ids: list[int], max_new_tokens: int = 300, **options) -> list[int]:
    """The new token ids (prompt excluded); see generate_stream for the options."""
    return list(generate_stream(model, prompt_ids, max_new_tokens, **options))
