"""`gpt-launch generate`: stories from a trained model, streamed token by token (a run's own samples
at its end are training/finish.py's)."""

from __future__ import annotations

import codecs

import click
import torch

from gpt_core import GenerationError, Tokenizer, generate_stream, load_pretrained
from gpt_core.generation import check_generation_args
from launch.checkpoints.folders import resolve_weights
from launch.checkpoints.restoring import read_trainer_state
from launch.checkpoints.weights import weights_tokenizer
from launch.errors import UserError
from launch.runtime.devices import available_device
from launch.runtime.precision import choose_precision
from launch.settings.commands import GenerateSettings


def generate_command(checkpoint: str | None, s: GenerateSettings) -> None:
    """`gpt-launch generate`: stream `s.num_samples` stories for `s.prompt`, or for each prompt typed
    in an interactive session (an empty line or Ctrl-D ends it). The tokenizer is the weights' own;
    --tokenizer must be that one, or name it for weights that carry none. The precision is
    --mixed-precision if given, else the weights' own where the device runs it at speed."""
    target = available_device(s.device)
    folder = resolve_weights(checkpoint)
    precision, why = choose_precision(target, s.mixed_precision, read_trainer_state(folder).get("mixed_precision"))
    model = load_pretrained(folder, map_location=target).eval()
    words = weights_tokenizer(folder, model.config.vocab_size, s.tokenizer)
    click.echo(f"model: {folder} ({model.num_params():,} parameters, {words.describe()}; in {why})", err=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(target.type, dtype=dtype, enabled=dtype is not None):
        _generate_session(model, words, s)


def _generate_session(model, words: Tokenizer, sampling: GenerateSettings) -> None:
    if not sampling.interactive:
        stream_stories(model, words, sampling.prompt, sampling)
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


def stream_stories(model, tokenizer: Tokenizer, text: str, s: GenerateSettings) -> None:
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
