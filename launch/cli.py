"""`gpt-launch`: the table of commands. Each command's flags are generated from its settings
(launch/settings/); its body lives in its own module (launch/commands/, training/, data/, bench/).

User mistakes print one line (`error: ...`) and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from gpt_core.files import write_json
from launch.errors import UserError
from launch.settings.command_errors import Command, Group, user_errors_exit
from launch.settings.commands import (
    BenchSettings,
    EvaluateSettings,
    ExportSettings,
    GenerateSettings,
    InfoSettings,
    ReportSettings,
    ShareSettings,
    SweepSettings,
)
from launch.settings.config import TrainConfig
from launch.settings.fields import flag_for, get_path, replace_paths
from launch.settings.options import config_options, given_options

WIDE = {"max_content_width": 110}


def train_command(
    defaults: TrainConfig | None = None, name: str = "train", help_text: str | None = None, needs: tuple[str, ...] = ()
):
    """A click command that trains with `defaults` (a TrainConfig); recipes call this. `needs` names
    settings the recipe cannot run without (init_from for fine-tuning, data.tokenizer)."""
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
        from launch.training.loop import train
        from launch.training.resume import session_config

        cfg = session_config(defaults, given_options(ctx, params), smoke)
        for needed in needs:
            if get_path(cfg, needed) is None:
                raise UserError(f"{name} needs {flag_for(TrainConfig, needed)}; see --help")
        train(cfg)

    return command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], **WIDE})
def cli():
    """Train, sample from, evaluate and report on small GPT language models."""


cli.add_command(train_command())


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@config_options(GenerateSettings())
@user_errors_exit
def generate(checkpoint, **settings):
    """Sample stories from CHECKPOINT (a run folder, a checkpoint folder, or the newest run), streaming
    tokens as they are produced."""
    from launch.commands.generate import generate_command

    generate_command(checkpoint, GenerateSettings(**settings))


@cli.command()
@config_options(TrainConfig(), only=("data.", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def prepare(ctx, **params):
    """Build the token cache of the data settings given (the paper's by default), or check the one
    already built, and print its counts. Run it once before `accelerate launch` on a cluster: every
    rank then reads the cache instead of waiting for one of them to build it.
    E.g. gpt-launch prepare --data stories/ --data-workers 16"""
    from launch.data.prepare import prepare_or_verify

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
    from launch.data.tokenizer_training import train_tokenizer as train_bpe

    cfg = replace_paths(TrainConfig(), given_options(ctx, params))
    click.echo(f"tokenizer: {train_bpe(cfg.data, cfg.seed, vocab_size, output)}")


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@config_options(EvaluateSettings())
@config_options(TrainConfig(), only=("data.", "layout", "seed"), show_default=False)
@click.pass_context
@user_errors_exit
def evaluate(ctx, checkpoint, **params):
    """Perplexity and token accuracy of CHECKPOINT: exp of the mean loss over real target tokens,
    gathered across processes without duplicates (works under `accelerate launch`).

    The data settings are the run's own (its train_config.json), so `--split test` is the run's test
    split; each flag given replaces one of them. Outside a run folder, the paper's settings apply.
    """
    from launch.commands.evaluate import evaluate_checkpoint

    own = {f.name for f in dataclasses.fields(EvaluateSettings)}
    settings = EvaluateSettings(**{k: v for k, v in params.items() if k in own})
    given = given_options(ctx, {k: v for k, v in params.items() if k not in own})
    evaluate_checkpoint(checkpoint, settings, given)


@cli.command(context_settings={"show_default": True})
@click.argument("checkpoint", required=False)
@config_options(InfoSettings())
@user_errors_exit
def info(checkpoint, **settings):
    """A checkpoint's or preset's config, parameter count, FLOPs per token, and an estimate of one
    epoch's time on this device, measured as `gpt-launch bench` measures our training."""
    from launch.commands.info import describe

    for line in describe(checkpoint, InfoSettings(**settings)):
        click.echo(line)


@cli.command(context_settings={"show_default": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@config_options(ReportSettings())
@user_errors_exit
def report(run_dir, **settings):
    """Turn RUN_DIR into a report: config, curves, final metrics, sample stories, hardware, throughput."""
    from launch.commands.report import write_report

    s = ReportSettings(**settings)
    click.echo(f"report: {write_report(Path(run_dir), s.format, s.output)}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@config_options(ShareSettings())
@user_errors_exit
def share(run_dir, **settings):
    """Publish RUN_DIR as a W&B Report: summary, loss/perplexity/accuracy/lr/throughput plots of the keys the run
    logged, the samples table, the curves image, hardware and config. Offline, it saves the report's
    specification as RUN_DIR/wandb_report.json and says what to run (`wandb sync ...`, then share again)."""
    from launch.commands.share import share as publish

    click.echo(f"share: {publish(Path(run_dir), ShareSettings(**settings).entity, log=click.echo)}")


@cli.command(context_settings={"show_default": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out")
@config_options(ExportSettings())
@user_errors_exit
def export(run_dir, out, **settings):
    """Write RUN_DIR's best weights to OUT as a model folder: model.safetensors, config.json, the tokenizer's
    name and a Hugging Face model card (README.md) with the run's test metrics and samples."""
    from launch.commands.export import export_model, push_to_hub

    s = ExportSettings(**settings)
    folder = export_model(Path(run_dir), Path(out), s.license)
    click.echo(f"export: {folder} (load it with gpt_core.load_pretrained)")
    if s.push:
        click.echo(f"export: uploaded to {push_to_hub(folder, s.push, s.private)}")


@cli.command(context_settings={"show_default": True})
@config_options(BenchSettings())
@user_errors_exit
def bench(**settings):
    """Measure training throughput (useful tokens/s, MFU against the measured matmul peak, peak memory),
    evaluation, KV-cache generation and data preparation on this device, against transformers' GPT-2
    when it is installed. (The paper's recipe as written: `python -m benchmarks.paper_recipe`.)"""
    from launch.bench.measure import default_implementations
    from launch.bench.run import format_table, run_bench

    s = BenchSettings(**settings)
    quiet = s.json_out == "-"
    implementations = default_implementations(s.baselines, s.activation_checkpointing)
    result = run_bench(s, implementations, progress=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(result) if quiet else format_table(result))
    if s.json_out and not quiet:
        write_json(s.json_out, result)


@cli.command(context_settings={"show_default": True, "ignore_unknown_options": True})
@click.argument("space", required=False)
@config_options(SweepSettings())
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
@user_errors_exit
def sweep(space, train_args, **settings):
    """Run a hyperparameter study of SPACE (YAML: train settings and their ranges) whose trials are
    ordinary `train` runs under --output-dir, with train's own flags for everything fixed; the same
    command on more machines, with one --storage, shares the study (--report: the report alone).
    E.g. gpt-launch sweep space.yaml --trials 16 --preset small --max-steps 300 --eval-every 50"""
    from launch.commands.sweep import sweep_command

    sweep_command(space, SweepSettings(**settings), list(train_args), train_command(), log=click.echo)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
