"""Stories from a trained model: the samples at a run's end, and `gpt-launch generate`, which
streams them token by token."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import click
import torch

from gpt_core import GenerationError, Tokenizer, generate, generate_stream, load_pretrained
from gpt_core.generation import check_generation_args

from .checkpoint import read_trainer_state, resolve_weights, weights_tokenizer
from .config import TrainConfig
from .errors import UserError
from .fields import check_setting
from .runtime import available_device, choose_precision


def sample_stories(model, tokenizer: Tokenizer, prompts: tuple[str, ...], max_tokens: int, seed: int) -> list[dict]:
    """One story per prompt, seeded by `seed` + its index, as a run's summary records them."""
    samples = []
    for i, prompt in enumerate(prompts):
        ids = generate(model, tokenizer.encode(prompt), max_tokens, eos_id=tokenizer.eot_id, seed=seed + i)
        samples.append({"prompt": prompt, "text": tokenizer.decode([t for t in ids if t != tokenizer.eot_id])})
    return samples


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 300
    temperature: float = 1.0
    top_k: int = 40  # 0: no limit
    top_p: float = 0.95
    greedy: bool = False
    seed: int | None = None
    num_samples: int = 1


def generate_command(
    checkpoint: str | None,
    prompt: str,
    sampling: Sampling,
    interactive: bool,
    device: str,
    tokenizer: str | None,
    mixed_precision: str | None = None,
) -> None:
    """`gpt-launch generate`: stream `sampling.num_samples` stories for `prompt`, or for each prompt
    typed in an interactive session (an empty line or Ctrl-D ends it). The tokenizer is the weights'
    own; `tokenizer` (--tokenizer) must be that one, or name it for weights that carry none. The
    precision is `mixed_precision` if given, else the weights' own where the device runs it at speed."""
    check_sampling(sampling)
    target = available_device(device)
    folder = resolve_weights(checkpoint)
    precision, why = choose_precision(target, mixed_precision, read_trainer_state(folder).get("mixed_precision"))
    model = load_pretrained(folder, map_location=target).eval()
    words = weights_tokenizer(folder, model.config.vocab_size, tokenizer)
    click.echo(f"model: {folder} ({model.num_params():,} parameters, {words.describe()}; in {why})", err=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(target.type, dtype=dtype, enabled=dtype is not None):
        _generate_session(model, words, prompt, sampling, interactive)


def check_sampling(s: Sampling) -> None:
    """The sampling flags, each named as typed, before any model is loaded (gpt_core checks its own
    arguments again, for callers of its API)."""
    for flag, value in (("--max-tokens", s.max_tokens), ("--num-samples", s.num_samples)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}; give {flag} 1 or more")
    check_setting(TrainConfig, "seed", s.seed)  # one seed rule for every command
    if s.greedy:
        return
    if not s.temperature > 0:
        raise UserError(
            f"--temperature must be > 0 when sampling, got {s.temperature}; use --greedy for the most likely token"
        )
    if s.top_k < 0:
        raise UserError(f"--top-k must be >= 1, or 0 for no limit, got {s.top_k}; give --top-k 0 or more")
    if not 0 < s.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {s.top_p}; give e.g. --top-p 0.95, or 1 for no limit")


def _generate_session(model, words: Tokenizer, prompt: str, sampling: Sampling, interactive: bool) -> None:
    if not interactive:
        stream_stories(model, words, prompt, sampling)
        return
    while True:
        try:
            text = input("prompt> ")
        except EOFError:
            break
        if not text.strip():
            break
        try:
            stream_stories(model, words, text, sampling)
        except (UserError, GenerationError) as e:  # a bad prompt should not end the session
            click.echo(f"error: {e}", err=True)


def stream_stories(model, tokenizer: Tokenizer, text: str, s: Sampling) -> None:
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # how Python keeps the bytes that are not UTF-8
        click.echo("note: the prompt holds bytes that are not UTF-8; each becomes U+FFFD", err=True)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ids = tokenizer.encode(text)
    # Checked before the prompt is echoed, so an error is a line of its own.
    check_generation_args(
        ids, s.max_tokens, s.temperature, s.top_k or None, s.top_p, s.greedy, model.config.context_length
    )
    for n in range(s.num_samples):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        click.echo(text, nl=False)
        seed = None if s.seed is None else s.seed + n
        options = {"temperature": s.temperature, "top_k": s.top_k or None, "top_p": s.top_p, "greedy": s.greedy}
        options["eos_id"] = tokenizer.eot_id
        for token in generate_stream(model, ids, s.max_tokens, seed=seed, **options):
            if token != tokenizer.eot_id:
                click.echo(decoder.decode(tokenizer.decode_bytes([token])), nl=False)
        click.echo(decoder.decode(b"", final=True))
        if n + 1 < s.num_samples:
            click.echo("---")
