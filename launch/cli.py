"""`gpt-launch`: train, generate, evaluate, info, report and bench from one command.

User mistakes print one line (`error: ...`) and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import USER_ERRORS, UserError


def _rank_prefix() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""


def user_errors_exit(fn):
    """Run a command; turn user errors into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .train import TrainingInterrupted

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            click.echo(f"{_rank_prefix()}error: {e}", err=True)
            sys.exit(2)
        except TrainingInterrupted as e:
            click.echo(f"{_rank_prefix()}{e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


# ---------------------------------------------------------------------------------------------
# train (also the body of every recipe)
# ---------------------------------------------------------------------------------------------
def _train_options(defaults):
    """click options for every TrainConfig/DataConfig field, defaulting to the recipe's values."""
    from .tracking import TRACKERS

    d, data = defaults, defaults.data
    opt = click.option
    options = [
        opt("--smoke", is_flag=True, help="A one-minute CPU run on the stories shipped with the package: small "
            "preset, a few steps, every stage (data, train, eval, checkpoint, samples, curves, summary)."),
        opt("--data", default=data.source, show_default=True,
            help="Stories: a Hugging Face hub id, or a local file, folder or glob (.txt with <|endoftext|> "
                 "separators, .jsonl/.json, .parquet, each optionally .gz)."),
        opt("--text-field", default=data.text_field, show_default=True, help="Field holding the story text."),
        opt("--split-mode", type=click.Choice(["paper", "shuffle", "source"]), default=data.split_mode,
            show_default=True, help="paper: first --max-samples stories cut 70/20/10 in order; shuffle: the same "
            "after a seeded shuffle; source: all train, held-out stories from the hub's validation split or --heldout-data."),
        opt("--heldout-data", default=data.heldout_source, help="Held-out stories for --split-mode source."),
        opt("--max-samples", type=int, default=data.max_samples, show_default=True,
            help="Use the first N stories of the source (the paper: 270,000). 0 for all."),
        opt("--data-cache", default=data.cache_dir, help="Token cache folder [default: ~/.cache/gpt-launch]."),
        opt("--preset", default=d.preset, show_default=True, help="Model shape: paper, paper-preln, small, tiny."),
        opt("--model-config", "model_config_file", type=click.Path(dir_okay=False), default=d.model_config_file,
            help="A model config JSON (fields as in a checkpoint's config.json); replaces --preset."),
        opt("--norm", type=click.Choice(["post", "pre"]), default=d.norm,
            help="LayerNorm placement; post is the paper's, pre trains more stably [default: the preset's]."),
        opt("--dropout", type=float, default=d.dropout, help="Dropout [default: the preset's, 0.1 for paper]."),
        opt("--layout", type=click.Choice(["packed", "padded"]), default=d.layout, show_default=True,
            help="packed: stories concatenated into full rows (no padding); padded: one story per row (the paper's)."),
        opt("--batch-size", type=int, default=d.batch_size, help="Rows per process per micro-batch [default: 4 on GPU, 2 on CPU]."),
        opt("--grad-accum", type=int, default=d.grad_accum, show_default=True, help="Micro-batches per optimizer step."),
        opt("--epochs", type=int, default=d.epochs, show_default=True, help="Maximum epochs (early stopping may end sooner)."),
        opt("--lr", type=float, default=d.lr, show_default=True, help="Peak AdamW learning rate."),
        opt("--weight-decay", type=float, default=d.weight_decay, show_default=True, help="AdamW weight decay (matrices only)."),
        opt("--warmup-steps", type=int, default=d.warmup_steps, show_default=True, help="Linear warmup, in optimizer steps, before cosine decay."),
        opt("--max-steps", type=int, default=d.max_steps, help="Cap the run at N optimizer steps (the schedule spans the cap)."),
        opt("--max-tokens", type=int, default=d.max_tokens, help="Cap the run at N training tokens (the schedule spans the cap)."),
        opt("--max-minutes", type=float, default=d.max_minutes, help="Pause after N minutes with a checkpoint; --resume auto continues."),
        opt("--stop-after-steps", type=int, default=d.stop_after_steps, help="Pause after N optimizer steps this session; --resume auto continues."),
        opt("--eval-every", type=int, default=d.eval_every, help="Also validate every N optimizer steps (always at each epoch end)."),
        opt("--eval-batches", type=int, default=d.eval_batches, help="Validate on at most N batches per process [default: all]."),
        opt("--patience", type=int, default=d.patience, show_default=True, help="Early stopping: evaluations without improvement."),
        opt("--log-every", type=int, default=d.log_every, show_default=True, help="Log (and read the loss back) every N optimizer steps."),
        opt("--save-every", type=int, default=d.save_every, help="Also checkpoint every N optimizer steps (always at each epoch end)."),
        opt("--output-dir", default=d.output_dir, show_default=True, help="Run folder: checkpoints, metrics.jsonl, curves.png, summary.json."),
        opt("--resume", default=d.resume, help="Continue from a checkpoints/step-N folder, or 'auto' for this run's newest."),
        opt("--tracker", type=click.Choice(TRACKERS), default=d.tracker, show_default=True,
            help="wandb (honours WANDB_MODE=offline) or tensorboard; metrics.jsonl is always written."),
        opt("--project", default=d.project, show_default=True, help="W&B / TensorBoard project name."),
        opt("--run-name", default=d.run_name, help="Run name for the tracker [default: the output folder's name]."),
        opt("--log-checkpoint", is_flag=True, default=d.log_checkpoint, help="Upload the best checkpoint to W&B as an artifact."),
        opt("--seed", type=int, default=d.seed, show_default=True, help="Seed for weights, shuffling, dropout and samples."),
        opt("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=d.mixed_precision,
            help="Override the Accelerate config's precision [default: as launched; fp32 on CPU]."),
        opt("--compile", is_flag=True, default=d.compile, help="torch.compile the model (faster on GPU after a warm-up)."),
        opt("--sample-tokens", type=int, default=d.sample_tokens, show_default=True, help="Length of the sample stories at the end."),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


DATA_OPTIONS = {"data": "source", "text_field": "text_field", "split_mode": "split_mode", "heldout_data": "heldout_source",
                "max_samples": "max_samples", "data_cache": "cache_dir"}


def _config_from_options(defaults, ctx: click.Context, params: dict):
    """The recipe's defaults (or the smoke run's), overridden by the options given on the command line."""
    from .train import smoke_config

    base = smoke_config() if params.pop("smoke") else defaults
    given = {k: v for k, v in params.items()
             if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT or base is defaults}
    if given.get("max_samples") == 0:
        given["max_samples"] = None
    data_changes = {DATA_OPTIONS[k]: given.pop(k) for k in list(given) if k in DATA_OPTIONS}
    data = dataclasses.replace(base.data, **data_changes) if data_changes else base.data
    return dataclasses.replace(base, data=data, **given)


def train_command(defaults=None, name: str = "train", help_text: str | None = None) -> click.Command:
    """A click command that trains with `defaults` (a TrainConfig); recipes call this."""
    from .train import TrainConfig

    defaults = defaults or TrainConfig()

    @click.command(name=name, help=help_text or "Train a GPT on stories (the paper's recipe unless told otherwise).",
                   context_settings={"show_default": True, "max_content_width": 110})
    @_train_options(defaults)
    @click.pass_context
    @user_errors_exit
    def command(ctx, **params):
        from .train import train

        train(_config_from_options(defaults, ctx, params))

    return command


# ---------------------------------------------------------------------------------------------
# the other subcommands
# ---------------------------------------------------------------------------------------------
def resolve_weights(path: str | None) -> Path:
    """A weights folder from a folder that holds model.safetensors, a run folder (its best), or the
    newest run under ./runs when no path is given."""
    from .checkpoint import find_best, step_checkpoints

    if path is None:
        runs = sorted((p for p in Path("runs").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime) if Path("runs").is_dir() else []
        runs = [r for r in runs if find_best(r) or step_checkpoints(r)]
        if not runs:
            raise UserError("no checkpoint given and no run under ./runs; pass a run folder or a checkpoint folder")
        path = str(runs[-1])
    folder = Path(path)
    if (folder / "model.safetensors").is_file():
        return folder
    if not folder.exists():
        raise UserError(f"{folder} does not exist; pass a run folder (--output-dir of a run) or a checkpoint folder")
    best = find_best(folder)
    steps = step_checkpoints(folder)
    if best or steps:
        return best or steps[-1]
    raise UserError(f"{folder} holds no model.safetensors and no checkpoints/; pass a run or checkpoint folder")


def _device(choice: str):
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """Train, sample from, evaluate and report on small GPT language models."""


cli.add_command(train_command())


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--prompt", "-p", default="Once upon a time", help="Text to continue.")
@click.option("--max-tokens", type=int, default=300, help="New tokens at most (generation also stops at <|endoftext|>).")
@click.option("--temperature", type=float, default=1.0, help="Sampling temperature (> 0).")
@click.option("--top-k", type=int, default=40, help="Sample among the k most likely tokens (0: no limit).")
@click.option("--top-p", type=float, default=0.95, help="Sample within the smallest set of tokens holding this probability.")
@click.option("--greedy", is_flag=True, help="Always take the most likely token (ignores temperature, top-k, top-p).")
@click.option("--seed", type=int, default=None, help="Seed for repeatable samples [default: random].")
@click.option("--num-samples", "-n", type=int, default=1, help="Stories per prompt.")
@click.option("--interactive", "-i", is_flag=True, help="Keep asking for prompts (empty line or Ctrl-D ends).")
@click.option("--device", default="auto", help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@user_errors_exit
def generate(checkpoint, prompt, max_tokens, temperature, top_k, top_p, greedy, seed, num_samples, interactive, device):
    """Sample stories from CHECKPOINT (a run folder, a checkpoint folder, or the newest run), streaming
    tokens as they are produced."""
    from gpt_core import generate_stream, get_tokenizer, load_pretrained

    folder = resolve_weights(checkpoint)
    model = load_pretrained(folder, map_location=_device(device)).eval()
    tokenizer = get_tokenizer()
    click.echo(f"model: {folder} ({model.num_params():,} parameters)", err=True)

    def sample(text: str) -> None:
        ids = tokenizer.encode(text)
        for n in range(num_samples):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            click.echo(text, nl=False)
            options = dict(temperature=temperature, top_k=top_k or None, top_p=top_p, greedy=greedy,
                           seed=None if seed is None else seed + n)
            for token in generate_stream(model, ids, max_tokens, **options):
                if token != tokenizer.eot_id:
                    click.echo(decoder.decode(tokenizer.decode_bytes([token])), nl=False)
            click.echo(decoder.decode(b"", final=True))
            if n + 1 < num_samples:
                click.echo("---")

    if not interactive:
        sample(prompt)
        return
    while True:
        try:
            text = input("prompt> ")
        except EOFError:
            break
        if not text.strip():
            break
        try:
            sample(text)
        except USER_ERRORS as e:  # a bad prompt should not end the session
            click.echo(f"error: {e}", err=True)


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--data", default="roneneldan/TinyStories", help="Stories to measure on (hub id, file, folder or glob).")
@click.option("--split", type=click.Choice(["train", "validation", "test", "all"]), default="test",
              help="Which split of --data (cut as in training); 'all' measures every story.")
@click.option("--split-mode", type=click.Choice(["paper", "shuffle"]), default="paper", help="How --data is split.")
@click.option("--max-samples", type=int, default=270_000, help="First N stories of --data (0: all).")
@click.option("--text-field", default="text", help="Field holding the story text.")
@click.option("--layout", type=click.Choice(["packed", "padded"]), default="packed",
              help="packed: the token stream in full rows; padded: one story per row (padding never counted).")
@click.option("--batch-size", type=int, default=8, help="Rows per process per batch.")
@click.option("--data-cache", default=None, help="Token cache folder [default: ~/.cache/gpt-launch].")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the metrics as JSON here.")
@user_errors_exit
def evaluate(checkpoint, data, split, split_mode, max_samples, text_field, layout, batch_size, data_cache, json_out):
    """Perplexity and token accuracy of CHECKPOINT on any story source: exp of the mean loss over real
    target tokens, gathered across processes without duplicates (works under `accelerate launch`)."""
    from tqdm.auto import tqdm

    from gpt_core import load_pretrained

    from .data import DataConfig, concat_splits, make_dataloader, make_dataset, prepare_data
    from .evaluate import evaluate as run_evaluation
    from .train import make_accelerator

    accelerator = make_accelerator()
    folder = resolve_weights(checkpoint)
    model = load_pretrained(folder).to(accelerator.device)
    cfg = DataConfig(source=data, text_field=text_field, split_mode=split_mode, max_samples=max_samples or None,
                     cache_dir=data_cache)
    prepared = prepare_data(cfg, accelerator.main_process_first, log=accelerator.print)
    chosen = concat_splits(prepared.splits.values()) if split == "all" else prepared.splits[split]
    loader = accelerator.prepare(make_dataloader(make_dataset(chosen, model.config.context_length, layout),
                                                 batch_size, 0, False, False))
    if accelerator.is_local_main_process:
        loader_iter = tqdm(loader, desc=f"evaluate {split}", unit="batch")
    else:
        loader_iter = loader
    metrics = run_evaluation(model, loader_iter, accelerator)
    result = {"checkpoint": str(folder), "data": data, "split": split, "layout": layout,
              "processes": accelerator.num_processes, **metrics}
    if accelerator.is_main_process:
        click.echo(f"{split}: loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.3f}  "
                   f"accuracy {metrics['accuracy']:.4f}  over {metrics['tokens']:,} target tokens "
                   f"({accelerator.num_processes} process(es))")
        if json_out:
            Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--preset", default=None, help="Describe a preset instead of a checkpoint.")
@click.option("--batch-size", type=int, default=None, help="Batch for the timing [default: 4 on GPU, 2 on CPU].")
@click.option("--epoch-tokens", type=int, default=37_800_000,
              help="Training tokens per epoch for the estimate (paper split: 189,000 stories x ~200 tokens).")
@click.option("--measure-steps", type=int, default=3, help="Timed forward+backward steps (after one warm-up).")
@click.option("--device", default="auto", help="cpu, cuda, ... [default: cuda if available].")
@user_errors_exit
def info(checkpoint, preset, batch_size, epoch_tokens, measure_steps, device):
    """A checkpoint's or preset's config, parameter count, FLOPs per token, and an estimate of one
    epoch's time on this device from a short measurement."""
    import torch

    from gpt_core import GPT, get_preset, load_pretrained

    dev = _device(device)
    if preset:
        model, source = GPT(get_preset(preset)), f"preset {preset}"
    else:
        folder = resolve_weights(checkpoint)
        model, source = load_pretrained(folder), str(folder)
    config = model.config
    model.to(dev).train()
    batch = batch_size or (4 if dev.type == "cuda" else 2)
    x = torch.randint(0, config.vocab_size, (batch, config.context_length), device=dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(measure_steps):
        step()
    tokens_per_s = measure_steps * batch * config.context_length / (time.perf_counter() - start)
    click.echo(f"source: {source}")
    click.echo(json.dumps(config.to_dict(), indent=2))
    click.echo(f"parameters: {model.num_params():,} (tied embedding {config.vocab_size * config.d_model:,})")
    click.echo(f"training FLOPs per token: {config.flops_per_token():,} ({config.flops_per_token() / 1e6:.0f} MFLOP)")
    click.echo(f"measured on {dev}: {tokens_per_s:,.0f} tokens/s (batch {batch} x {config.context_length}, fp32)")
    click.echo(f"estimated time per epoch of {epoch_tokens:,} tokens: {epoch_tokens / tokens_per_s / 3600:.2f} h")


@cli.command(context_settings={"show_default": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="html", help="Markdown (links curves.png) or one self-contained HTML file.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Where to write [default: RUN_DIR/report.md|html].")
@user_errors_exit
def report(run_dir, fmt, output):
    """Turn RUN_DIR into a report: config, curves, final metrics, sample stories, hardware, throughput."""
    from .report import render_report

    text = render_report(Path(run_dir), fmt)
    out = Path(output) if output else Path(run_dir) / f"report.{fmt}"
    out.write_text(text)
    click.echo(f"report: {out}")


@cli.command(context_settings={"show_default": True})
@click.option("--preset", default="paper", help="Model shape to measure.")
@click.option("--batch-size", type=int, default=None, help="Rows per micro-batch [default: 2 on CPU, 4 on GPU].")
@click.option("--grad-accum", type=int, default=2, help="Micro-batches per optimizer step.")
@click.option("--steps", type=int, default=3, help="Timed optimizer steps per implementation and round.")
@click.option("--warmup", type=int, default=2,
              help="Untimed optimizer steps first: the first steps pay for page faults and optimizer state.")
@click.option("--rounds", type=int, default=2, help="Interleaved rounds over the implementations; figures are medians.")
@click.option("--device", default="auto", help="cpu, cuda, ... [default: cuda if available].")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Training precision [default: fp32 on CPU, bf16 on GPU].")
@click.option("--data", default=None, help="Stories whose real lengths are used [default: the shipped smoke stories].")
@click.option("--baselines/--no-baselines", default=True, help="Also measure (a) the paper's recipe and (b) transformers' GPT-2.")
@click.option("--gen-tokens", type=int, default=300, help="Tokens generated for the KV-cache comparison.")
@click.option("--compile", is_flag=True, help="Measure our model under torch.compile.")
@click.option("--json", "json_out", default=None, help="Also write the figures as one JSON object to this file ('-': stdout only).")
@user_errors_exit
def bench(preset, batch_size, grad_accum, steps, warmup, rounds, device, precision, data, baselines, gen_tokens, compile, json_out):
    """Measure training throughput (useful tokens/s, MFU against the measured matmul peak, peak memory)
    against two baselines in the same run, KV-cache generation speed, and data preparation speed."""
    from .bench.run import format_table, run_bench

    quiet = json_out == "-"
    result = run_bench(preset=preset, batch_size=batch_size, grad_accum=grad_accum, steps=steps, warmup=warmup, device=device,
                       precision=precision, data=data, baselines=baselines, gen_tokens=gen_tokens, compile=compile,
                       rounds=rounds, progress=lambda m: click.echo(m, err=True))
    if quiet:
        click.echo(json.dumps(result))
        return
    click.echo(format_table(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
