"""`gpt-launch`: train, generate, evaluate, info, report, share, export and bench from one command.

User mistakes print one line (`error: ...`) and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import codecs
import functools
import json
import sys
import types
import typing
from pathlib import Path

import click

from .checkpoint import resolve_weights
from .config import (
    RUN_CONFIG_NAME,
    TrainConfig,
    choices_of,
    flag_of,
    for_next_session,
    get_path,
    leaf_fields,
    replace_paths,
    saved_run_config,
    smoke_config,
)
from .errors import USER_ERRORS, UserError
from .runtime import TrainingInterrupted, default_batch_size, rank_prefix, rank_print, resolve_device


def user_errors_exit(fn):
    """Run a command; turn user errors into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            click.echo(f"{rank_prefix()}error: {e}", err=True)
            sys.exit(2)
        except TrainingInterrupted as e:
            click.echo(f"{rank_prefix()}{e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, without saving
            click.echo(
                f"{rank_prefix()}interrupted twice: stopped at once without saving; "
                "continue from the last checkpoint with --resume auto",
                err=True,
            )
            sys.exit(130)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Options generated from the config fields: each option is defined once, in launch/config.py
# ---------------------------------------------------------------------------------------------
def _without_none(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 else annotation
    )


def _click_option(dotted: str, f, annotation, default, show_default: bool):
    kwargs = {"help": f.metadata["help"], "default": default, "show_default": show_default and default is not None}
    base, choices = _without_none(annotation), choices_of(annotation)
    if base is bool:
        kwargs["is_flag"] = True
    elif choices:
        kwargs["type"] = click.Choice(choices)
    elif typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if args[-1] is Ellipsis:
            kwargs.update(multiple=True, type=args[0])
        else:
            kwargs.update(nargs=len(args), type=args[0])
    else:
        kwargs["type"] = base
    return click.option(flag_of(f), dotted.replace(".", "__"), **kwargs)


def config_options(defaults: TrainConfig, only: tuple[str, ...] | None = None, show_default: bool = True):
    """click options for the config fields (all, or those whose dotted name starts with one of `only`)."""
    options = [
        _click_option(dotted, f, annotation, get_path(defaults, dotted), show_default)
        for dotted, f, annotation in leaf_fields()
        if only is None or dotted.startswith(only)
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def given_options(ctx: click.Context, params: dict) -> dict:
    """{"data.source": value, ...} for the config options typed on the command line."""
    given = {
        name.replace("__", "."): value
        for name, value in params.items()
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
    }
    if given.get("data.max_samples") == 0:  # 0 on the command line: every story
        given["data.max_samples"] = None
    return given


def config_from_options(defaults: TrainConfig, ctx: click.Context, params: dict) -> TrainConfig:
    """The run's settings: on --resume, those the run was started with; else the recipe's (or the
    smoke run's). Then the flags given on the command line, and only those."""
    smoke = params.pop("smoke")
    given = given_options(ctx, params)
    base = smoke_config(defaults) if smoke else defaults
    if given.get("resume"):
        run_dir = (
            Path(given.get("output_dir", base.output_dir))
            if given["resume"] == "auto"
            else Path(given["resume"]).parent.parent
        )
        saved = saved_run_config(run_dir)
        base = for_next_session(saved, defaults) if saved else base
    return replace_paths(base, given)


def train_command(
    defaults: TrainConfig | None = None, name: str = "train", help_text: str | None = None
) -> click.Command:
    """A click command that trains with `defaults` (a TrainConfig); recipes call this."""
    defaults = defaults or TrainConfig()

    @click.command(
        name=name,
        help=help_text or "Train a GPT on stories (the paper's recipe unless told otherwise).",
        context_settings={"show_default": True, "max_content_width": 110},
    )
    @click.option(
        "--smoke",
        is_flag=True,
        help="A one-minute CPU run on the stories shipped with the package: small "
        "preset, a few steps, every stage (data, train, eval, checkpoint, samples, curves, summary).",
    )
    @config_options(defaults)
    @click.pass_context
    @user_errors_exit
    def command(ctx, **params):
        from .train import train

        train(config_from_options(defaults, ctx, params))

    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """Train, sample from, evaluate and report on small GPT language models."""


cli.add_command(train_command())


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--prompt", "-p", default="Once upon a time", help="Text to continue.")
@click.option(
    "--max-tokens", type=int, default=300, help="New tokens at most (generation also stops at <|endoftext|>)."
)
@click.option("--temperature", type=float, default=1.0, help="Sampling temperature (> 0).")
@click.option("--top-k", type=int, default=40, help="Sample among the k most likely tokens (0: no limit).")
@click.option(
    "--top-p", type=float, default=0.95, help="Sample within the smallest set of tokens holding this probability."
)
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
    from gpt_core.generation import check_generation_args

    for flag, value in (("--max-tokens", max_tokens), ("--num-samples", num_samples)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    folder = resolve_weights(checkpoint)
    model = load_pretrained(folder, map_location=resolve_device(device)).eval()
    tokenizer = get_tokenizer()
    click.echo(f"model: {folder} ({model.num_params():,} parameters)", err=True)

    def sample(text: str) -> None:
        ids = tokenizer.encode(text)
        # Checked before the prompt is echoed, so an error is a line of its own.
        check_generation_args(ids, max_tokens, temperature, top_k or None, top_p, greedy, model.config.context_length)
        for n in range(num_samples):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            click.echo(text, nl=False)
            options = dict(
                temperature=temperature,
                top_k=top_k or None,
                top_p=top_p,
                greedy=greedy,
                seed=None if seed is None else seed + n,
            )
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


@cli.command()
@config_options(TrainConfig(), only=("data.", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def prepare(ctx, **params):
    """Build the token cache of the data settings given (the paper's by default), or check the one
    already built, and print its counts. Run it once before `accelerate launch` on a cluster: every
    rank then reads the cache instead of waiting for one of them to build it.

    \b
    gpt-launch prepare --data ../shared/data/tinystories --data-workers 16
    """
    from .data import prepare_data, verify_cache

    cfg = replace_paths(TrainConfig(), given_options(ctx, params))
    prepared = prepare_data(cfg.data, cfg.seed, progress_bar=sys.stderr.isatty())
    if prepared.from_cache:
        verify_cache(prepared)
        click.echo(f"data: cache verified, {sum(s.num_stories for s in prepared.splits.values()):,} stories")
    click.echo(str(prepared.cache_dir))


@cli.command()
@click.argument("checkpoint", required=False)
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test", "all"]),
    default="test",
    show_default=True,
    help="Which split of the data (cut as in training); 'all' measures every story.",
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Rows per process per batch.")
@click.option("--max-batches", type=int, default=None, help="Measure at most N batches per process [default: all].")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the metrics as JSON here.")
@config_options(TrainConfig(), only=("data.", "layout", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def evaluate(ctx, checkpoint, split, batch_size, max_batches, json_out, **params):
    """Perplexity and token accuracy of CHECKPOINT: exp of the mean loss over real target tokens,
    gathered across processes without duplicates (works under `accelerate launch`).

    The data settings are the run's own (its train_config.json), so `--split test` is the run's test
    split; each flag given replaces one of them. Outside a run folder, the paper's settings apply.
    """
    from gpt_core import load_pretrained

    from .data import concat_splits, make_dataloader, make_dataset, prepare_data
    from .evaluate import evaluate as run_evaluation
    from .runtime import make_accelerator

    accelerator = make_accelerator()
    folder = resolve_weights(checkpoint)
    run_config = saved_run_config(folder.parent.parent)
    cfg = replace_paths(run_config or TrainConfig(), given_options(ctx, params))
    accelerator.print(
        f"evaluate: data settings from {folder.parent.parent / RUN_CONFIG_NAME if run_config else 'the paper recipe'}"
        ", changed by the flags given"
    )
    model = load_pretrained(folder).to(accelerator.device)
    prepared = prepare_data(cfg.data, cfg.seed, log=accelerator.print, say=rank_print)
    chosen = concat_splits(prepared.splits.values()) if split == "all" else prepared.splits[split]
    loader = accelerator.prepare(
        make_dataloader(
            make_dataset(chosen, model.config.context_length, cfg.layout),
            batch_size,
            cfg.seed,
            shuffle=False,
            drop_last=False,
        )
    )
    metrics = run_evaluation(model, loader, accelerator, max_batches, desc=f"evaluate {split}")
    result = {
        "checkpoint": str(folder),
        "data": cfg.data.source,
        "split": split,
        "layout": cfg.layout,
        "processes": accelerator.num_processes,
        **metrics,
    }
    if accelerator.is_main_process:
        click.echo(
            f"{split}: loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.3f}  "
            f"accuracy {metrics['accuracy']:.4f}  over {metrics['tokens']:,} target tokens "
            f"({accelerator.num_processes} process(es))"
        )
        if json_out:
            Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    # Tear the process group down on every rank together: a rank that exits while another still
    # writes can abort in gloo's teardown ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--preset", default=None, help="Describe a preset instead of a checkpoint.")
@click.option("--batch-size", type=int, default=None, help="Batch for the timing [default: 4 on GPU, 2 on CPU].")
@click.option(
    "--epoch-tokens",
    type=int,
    default=37_800_000,
    help="Training tokens per epoch for the estimate (paper split: 189,000 stories x ~200 tokens).",
)
@click.option("--measure-steps", type=int, default=3, help="Timed optimizer steps (after two untimed ones).")
@click.option("--device", default="auto", help="cpu, cuda, ... [default: cuda if available].")
@user_errors_exit
def info(checkpoint, preset, batch_size, epoch_tokens, measure_steps, device):
    """A checkpoint's or preset's config, parameter count, FLOPs per token, and an estimate of one
    epoch's time on this device, measured as `gpt-launch bench` measures our training."""
    from gpt_core import get_preset, load_pretrained

    from .bench.run import measure_our_training

    dev = resolve_device(device)
    if preset:
        config, source = get_preset(preset), f"preset {preset}"
    else:
        folder = resolve_weights(checkpoint)
        config, source = load_pretrained(folder).config, str(folder)
    batch = batch_size or default_batch_size(dev)
    tokens_per_s = measure_our_training(config, dev, batch, steps=measure_steps)
    click.echo(f"source: {source}")
    click.echo(json.dumps(config.to_dict(), indent=2))
    click.echo(f"parameters: {config.num_params():,} (tied embedding {config.vocab_size * config.d_model:,})")
    click.echo(f"training FLOPs per token: {config.flops_per_token():,} ({config.flops_per_token() / 1e6:.0f} MFLOP)")
    click.echo(
        f"measured on {dev}: {tokens_per_s:,.0f} tokens/s (batch {batch} x {config.context_length} x accumulation 2, "
        f"fp32, median of {measure_steps} optimizer steps after 2 untimed)"
    )
    click.echo(f"estimated time per epoch of {epoch_tokens:,} tokens: {epoch_tokens / tokens_per_s / 3600:.2f} h")


@cli.command(context_settings={"show_default": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html"]),
    default="html",
    help="Markdown (links curves.png) or one self-contained HTML file.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write [default: RUN_DIR/report.md|html].",
)
@user_errors_exit
def report(run_dir, fmt, output):
    """Turn RUN_DIR into a report: config, curves, final metrics, sample stories, hardware, throughput."""
    from .report import render_report

    text = render_report(Path(run_dir), fmt)
    out = Path(output) if output else Path(run_dir) / f"report.{fmt}"
    out.write_text(text)
    click.echo(f"report: {out}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--entity", default=None, help="W&B entity (user or team) to publish under [default: the run's, else yours]."
)
@user_errors_exit
def share(run_dir, entity):
    """Publish RUN_DIR as a W&B Report: summary, loss/perplexity/accuracy/lr/throughput plots of the keys the run
    logged, the samples table, the curves image, hardware and config. Offline, it saves the report's
    specification as RUN_DIR/wandb_report.json and says what to run (`wandb sync ...`, then share again)."""
    from .share import share as publish

    url = publish(Path(run_dir), entity, log=click.echo)
    click.echo(f"share: {url}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--license",
    "license_",
    default="mit",
    show_default=True,
    help="Licence of the weights for the model card (the data's CDLA-Sharing-1.0 is stated either way).",
)
@click.option("--push", "repo", default=None, help="Also upload OUT to this Hugging Face Hub repo (user/name).")
@click.option("--private", is_flag=True, help="With --push: create the repo private.")
@user_errors_exit
def export(run_dir, out, license_, repo, private):
    """Write RUN_DIR's best weights to OUT as a model folder: model.safetensors, config.json, the tokenizer's
    name and a Hugging Face model card (README.md) with the run's test metrics and samples."""
    from .export import export_model, push_to_hub

    folder = export_model(Path(run_dir), Path(out), license_)
    click.echo(f"export: {folder} (load it with gpt_core.load_pretrained)")
    if repo:
        click.echo(f"export: uploaded to {push_to_hub(folder, repo, private)}")


@cli.command(context_settings={"show_default": True})
@click.option("--preset", default="paper", help="Model shape to measure.")
@click.option("--batch-size", type=int, default=None, help="Rows per micro-batch [default: 2 on CPU, 4 on GPU].")
@click.option("--grad-accum", type=int, default=2, help="Micro-batches per optimizer step.")
@click.option("--steps", type=int, default=3, help="Timed optimizer steps per implementation and round.")
@click.option(
    "--warmup",
    type=int,
    default=2,
    help="Untimed optimizer steps first: the first steps pay for page faults and optimizer state.",
)
@click.option("--rounds", type=int, default=2, help="Interleaved rounds over the implementations; figures are medians.")
@click.option("--device", default="auto", help="cpu, cuda, ... [default: cuda if available].")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default=None,
    help="Training precision [default: fp32 on CPU, bf16 on GPU].",
)
@click.option("--data", default=None, help="Stories whose real lengths are used [default: the shipped smoke stories].")
@click.option(
    "--baselines/--no-baselines", default=True, help="Also measure (a) the paper's recipe and (b) transformers' GPT-2."
)
@click.option("--gen-tokens", type=int, default=300, help="Tokens generated for the KV-cache comparison.")
@click.option("--compile", is_flag=True, help="Measure our model under torch.compile.")
@click.option(
    "--json",
    "json_out",
    default=None,
    help="Also write the figures as one JSON object to this file ('-': stdout only).",
)
@user_errors_exit
def bench(
    preset,
    batch_size,
    grad_accum,
    steps,
    warmup,
    rounds,
    device,
    precision,
    data,
    baselines,
    gen_tokens,
    compile,
    json_out,
):
    """Measure training throughput (useful tokens/s, MFU against the measured matmul peak, peak memory)
    against two baselines in the same run, KV-cache generation speed, and data preparation speed."""
    from .bench.run import format_table, run_bench

    quiet = json_out == "-"
    result = run_bench(
        preset=preset,
        batch_size=batch_size,
        grad_accum=grad_accum,
        steps=steps,
        warmup=warmup,
        device=device,
        precision=precision,
        data=data,
        baselines=baselines,
        gen_tokens=gen_tokens,
        compile=compile,
        rounds=rounds,
        progress=lambda m: click.echo(m, err=True),
    )
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
