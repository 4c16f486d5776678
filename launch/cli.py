"""`gpt-launch`: the table of commands. Each command's options are here; its body lives in its module.

User mistakes print one line (`error: ...`) and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .command_errors import Command, Group, user_errors_exit
from .config import BATCH_SIZE_RULE, TrainConfig
from .errors import UserError
from .fields import replace_paths
from .options import config_options, given_options
from .sampling import Sampling

WIDE = {"max_content_width": 110}


def train_command(
    defaults: TrainConfig | None = None, name: str = "train", help_text: str | None = None, needs: tuple[str, ...] = ()
):
    """A click command that trains with `defaults` (a TrainConfig); recipes call this. `needs` names
    settings the recipe cannot run without (e.g. init_from for fine-tuning)."""
    defaults = defaults or TrainConfig()

    @click.command(
        cls=Command,
        name=name,
        help=help_text or "Train a GPT on stories (the paper's recipe unless told otherwise).",
        context_settings={"show_default": True, **WIDE},
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
    def command(ctx, smoke, **params):
        from .resume import session_config
        from .train import train

        cfg = session_config(defaults, given_options(ctx, params), smoke)
        for needed in needs:
            if getattr(cfg, needed) is None:
                raise UserError(f"{name} needs --{needed.replace('_', '-')}; see --help")
        train(cfg)

    return command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], **WIDE})
def cli():
    """Train, sample from, evaluate and report on small GPT language models."""


cli.add_command(train_command())


# evaluate and generate: one definition of the precision they run in
precision_option = click.option(
    "--mixed-precision",
    type=click.Choice(["no", "bf16", "fp16"]),
    default=None,
    help="Precision of the forward passes [default: what the weights were trained in, where this device runs "
    "it at speed; else fp32 (no)].",
)


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--prompt", "-p", default="Once upon a time", help="Text to continue.")
@click.option(
    "--max-tokens",
    type=int,
    default=Sampling.max_tokens,
    help="New tokens at most (generation also stops at <|endoftext|>).",
)
@click.option("--temperature", type=float, default=Sampling.temperature, help="Sampling temperature (> 0).")
@click.option("--top-k", type=int, default=Sampling.top_k, help="Sample among the k most likely tokens (0: no limit).")
@click.option(
    "--top-p",
    type=float,
    default=Sampling.top_p,
    help="Sample within the smallest set of tokens holding this probability.",
)
@click.option("--greedy", is_flag=True, help="Always take the most likely token (ignores temperature, top-k, top-p).")
@click.option("--seed", type=int, default=None, help="Seed for repeatable samples [default: random].")
@click.option("--num-samples", "-n", type=int, default=Sampling.num_samples, help="Stories per prompt.")
@click.option("--interactive", "-i", is_flag=True, help="Keep asking for prompts (empty line or Ctrl-D ends).")
@click.option("--device", default="auto", help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@click.option(
    "--tokenizer",
    default=None,
    help="The weights' tokenizer, for weights that carry none [default: their own tokenizer.json, else GPT-2 BPE].",
)
@precision_option
@user_errors_exit
def generate(checkpoint, prompt, interactive, device, tokenizer, mixed_precision, **sampling):
    """Sample stories from CHECKPOINT (a run folder, a checkpoint folder, or the newest run), streaming
    tokens as they are produced."""
    from .sampling import generate_command

    generate_command(checkpoint, prompt, Sampling(**sampling), interactive, device, tokenizer, mixed_precision)


@cli.command()
@config_options(TrainConfig(), only=("data.", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def prepare(ctx, **params):
    """Build the token cache of the data settings given (the paper's by default), or check the one
    already built, and print its counts. Run it once before `accelerate launch` on a cluster: every
    rank then reads the cache instead of waiting for one of them to build it.

    \\b
    gpt-launch prepare --data stories/ --data-workers 16
    """
    from .data.prepare import prepare_or_verify

    cfg = replace_paths(TrainConfig(), given_options(ctx, params))
    prepare_or_verify(cfg.data, cfg.seed, progress_bar=sys.stderr.isatty())


@cli.group()
def tokenizer():
    """Tokenizers trained on the stories (the default stays GPT-2 BPE)."""


@tokenizer.command("train", context_settings={"show_default": True})
@click.option("--output", required=True, help="Folder to write tokenizer.json into.")
@click.option(
    "--vocab-size", type=int, default=4096, help="Tokens in the vocabulary, <|endoftext|> and 256 bytes included."
)
@config_options(TrainConfig(), only=("data.", "seed"), show_default=False, leave_out=("data.tokenizer",))
@click.pass_context
@user_errors_exit
def train_tokenizer(ctx, output, vocab_size, **params):
    """Train a byte-level BPE on the train split of the data settings given (the paper's by default),
    never on validation or test, and write OUTPUT/tokenizer.json; then train with --tokenizer OUTPUT.

    \b
    gpt-launch tokenizer train --data stories/ --vocab-size 4096 --output tokenizers/story-4k
    """
    from .data.tokenizer_training import train_tokenizer as train_bpe

    cfg = replace_paths(TrainConfig(), given_options(ctx, params))
    click.echo(f"tokenizer: {train_bpe(cfg.data, cfg.seed, vocab_size, output)}")


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
@click.option("--json-out", default=None, help="Also write the metrics as JSON here.")
@precision_option
@config_options(TrainConfig(), only=("data.", "layout", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def evaluate(ctx, checkpoint, split, batch_size, max_batches, json_out, mixed_precision, **params):
    """Perplexity and token accuracy of CHECKPOINT: exp of the mean loss over real target tokens,
    gathered across processes without duplicates (works under `accelerate launch`).

    The data settings are the run's own (its train_config.json), so `--split test` is the run's test
    split; each flag given replaces one of them. Outside a run folder, the paper's settings apply.
    """
    from .evaluate import evaluate_checkpoint

    evaluate_checkpoint(
        checkpoint, split, batch_size, max_batches, json_out, given_options(ctx, params), mixed_precision
    )


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@click.option("--preset", default=None, help="Describe a preset instead of a checkpoint.")
@click.option("--batch-size", type=int, default=None, help=f"Batch for the timing [default: {BATCH_SIZE_RULE}].")
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
    from .info import describe

    for line in describe(checkpoint, preset, batch_size, epoch_tokens, measure_steps, device):
        click.echo(line)


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
    from .report import write_report

    click.echo(f"report: {write_report(Path(run_dir), fmt, output)}")


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

    click.echo(f"share: {publish(Path(run_dir), entity, log=click.echo)}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out")
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
@click.option("--batch-size", type=int, default=None, help=f"Rows per micro-batch [default: {BATCH_SIZE_RULE}].")
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
    "--baselines/--no-baselines",
    default=True,
    help="Also measure transformers' GPT-2 of the same size (when transformers is installed).",
)
@click.option("--gen-tokens", type=int, default=300, help="Tokens generated for the KV-cache comparison.")
@click.option("--compile", is_flag=True, help="Measure our model under torch.compile.")
@click.option(
    "--activation-checkpointing",
    "recomputing",
    is_flag=True,
    help="Also measure ours with --activation-checkpointing: its peak memory and its cost in time.",
)
@click.option(
    "--json",
    "json_out",
    default=None,
    help="Also write the figures as one JSON object to this file ('-': stdout only).",
)
@user_errors_exit
def bench(baselines, recomputing, json_out, **settings):
    """Measure training throughput (useful tokens/s, MFU against the measured matmul peak, peak memory),
    evaluation, KV-cache generation and data preparation on this device, against transformers' GPT-2
    when it is installed. (The paper's recipe as written: `python -m benchmarks.paper_recipe`.)"""
    from .bench.measure import default_implementations
    from .bench.run import BenchSettings, format_table, run_bench

    quiet = json_out == "-"
    result = run_bench(
        BenchSettings(**settings),
        default_implementations(baselines, recomputing),
        progress=lambda m: click.echo(m, err=True),
    )
    click.echo(json.dumps(result) if quiet else format_table(result))
    if json_out and not quiet:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
