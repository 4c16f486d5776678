"""The settings of the commands besides train, as dataclasses whose fields generate each command's
flags (options.py), exactly as TrainConfig's fields generate train's.

A setting that means what one of train's means *is* that setting (`same_as`): one type, flag, help
text and bounds, whatever command takes it; only its default may differ, and then the help says
which. The settings each command alone has are defined here, once.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from launch.errors import UserError

from .config import TrainConfig
from .fields import check_fields, leaf_fields, setting

DEFAULT_NOTE = re.compile(r"\s*\[default: [^\]]*\]")


def same_as(name: str, default=dataclasses.MISSING, default_note: str | None = None) -> dataclasses.Field:
    """Train's setting `name` ("batch_size", "data.tokenizer") as another command's field: its
    definition as it is, or with that command's `default`, which `default_note` ("[default: ...]")
    then describes in place of train's."""
    original = next(f for dotted, f, _ in leaf_fields(TrainConfig) if dotted == name)
    meta = dict(original.metadata, same_as=name)
    if default_note is not None:
        text = DEFAULT_NOTE.sub("", meta["help"]).rstrip(".")
        meta["help"] = f"{text} {default_note}."
    return dataclasses.field(default=original.default if default is dataclasses.MISSING else default, metadata=meta)


def device_setting():
    return setting("auto", "cpu, cuda, cuda:1 ... [default: cuda if available].")


def weights_precision_setting():
    """--mixed-precision for a command that runs trained weights (generate, evaluate)."""
    return same_as(
        "mixed_precision",
        None,
        "[default: what the weights were trained in, where this device runs it at speed; else fp32 (no)]",
    )


def batch_size_setting(default_note: str, default: int | None = None):
    """Train's --batch-size for a command that does not train: a number ("auto" sizes training batches)."""
    return same_as("batch_size", default, default_note)


def refuse_auto_batch(settings) -> None:
    if settings.batch_size == "auto":
        raise UserError("--batch-size auto sizes training batches (GPUs); give this command a number")


@dataclass(frozen=True)
class GenerateSettings:
    """`gpt-launch generate`: what to continue, how to sample, and where."""

    prompt: str = setting("Once upon a time", "Text to continue.", short="-p")
    max_tokens: int = setting(300, "New tokens at most (generation also stops at <|endoftext|>).", at_least=1)
    temperature: float = setting(1.0, "Sampling temperature (> 0).")
    top_k: int = setting(40, "Sample among the k most likely tokens (0: no limit).")
    top_p: float = setting(0.95, "Sample within the smallest set of tokens holding this probability.")
    greedy: bool = setting(False, "Always take the most likely token (ignores temperature, top-k, top-p).")
    seed: int | None = same_as("seed", None, "[default: random]")
    num_samples: int = setting(1, "Stories per prompt.", short="-n", at_least=1)
    interactive: bool = setting(False, "Keep asking for prompts (empty line or Ctrl-D ends).", short="-i")
    device: str = device_setting()
    tokenizer: str | None = same_as(
        "data.tokenizer", None, "[default: the weights' own tokenizer.json, else GPT-2 BPE; another must be that one]"
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = weights_precision_setting()

    def __post_init__(self) -> None:
        """Checked before any model is loaded (gpt_core checks its own arguments again, for callers of its API)."""
        check_fields(self)
        if self.greedy:
            return
        if not self.temperature > 0:
            raise UserError(
                f"--temperature must be > 0 when sampling, got {self.temperature}; "
                "use --greedy for the most likely token"
            )
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 1, or 0 for no limit, got {self.top_k}; give --top-k 0 or more")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}; give e.g. --top-p 0.95, or 1 for no limit")


@dataclass(frozen=True)
class EvaluateSettings:
    """`gpt-launch evaluate`'s own settings; the data settings are the run's, changed by train's flags."""

    split: Literal["train", "validation", "test", "all"] = setting(
        "test", "Which split of the data (cut as in training); 'all' measures every story."
    )
    batch_size: int | Literal["auto"] | None = batch_size_setting("[default: 8]", 8)
    max_batches: int | None = setting(None, "Measure at most N batches per process [default: all].", at_least=1)
    json_out: str | None = setting(None, "Also write the metrics as JSON here.")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = weights_precision_setting()

    def __post_init__(self) -> None:
        check_fields(self)
        refuse_auto_batch(self)


@dataclass(frozen=True)
class InfoSettings:
    """`gpt-launch info`: what to describe, and how its epoch time is measured."""

    preset: str | None = same_as("preset", None, "[default: describe the checkpoint instead]")
    batch_size: int | Literal["auto"] | None = batch_size_setting("[default: 4 on a GPU, 2 on a CPU]")
    epoch_tokens: int = setting(
        37_800_000,
        "Training tokens per epoch for the estimate (paper split: 189,000 stories x ~200 tokens).",
        at_least=1,
    )
    measure_steps: int = setting(3, "Timed optimizer steps (after two untimed ones).", at_least=1)
    device: str = device_setting()

    def __post_init__(self) -> None:
        check_fields(self)
        refuse_auto_batch(self)


@dataclass(frozen=True)
class BenchSettings:
    """`gpt-launch bench`: what is measured, how long, and where."""

    preset: str | None = same_as("preset", "paper", "[default: paper]")
    batch_size: int | Literal["auto"] | None = batch_size_setting("[default: 4 on a GPU, 2 on a CPU]")
    grad_accum: int = same_as("grad_accum", 2, "[default: 2]")
    steps: int = setting(3, "Timed optimizer steps per implementation and round.", at_least=1)
    warmup: int = setting(
        2, "Untimed optimizer steps first: the first steps pay for page faults and optimizer state.", at_least=0
    )
    rounds: int = setting(2, "Interleaved rounds over the implementations; figures are medians.", at_least=1)
    device: str = device_setting()
    mixed_precision: Literal["no", "fp16", "bf16"] | None = same_as(
        "mixed_precision", None, "[default: fp32 (no) on a CPU, bf16 on a GPU]"
    )
    data: str | None = same_as("data.source", None, "[default: the shipped smoke stories; their real lengths are used]")
    cache_dir: str | None = same_as("data.cache_dir")
    gen_tokens: int = setting(300, "Tokens generated for the KV-cache comparison.", at_least=1)
    compile: bool = same_as("compile")
    activation_checkpointing: bool = same_as("activation_checkpointing")
    baselines: bool = setting(
        True,
        "Also measure transformers' GPT-2 of the same size (when transformers is installed).",
        flag="--baselines/--no-baselines",
    )
    json_out: str | None = setting(
        None, "Also write the figures as one JSON object to this file ('-': stdout only).", flag="--json"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        refuse_auto_batch(self)

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: the name the figures are reported under."""
        return {"no": "fp32"}.get(self.mixed_precision, self.mixed_precision)


@dataclass(frozen=True)
class ReportSettings:
    """`gpt-launch report`: which format, and where."""

    format: Literal["md", "html"] = setting("html", "Markdown (links curves.png) or one self-contained HTML file.")
    output: str | None = setting(None, "Where to write [default: RUN_DIR/report.md|html].", short="-o")


@dataclass(frozen=True)
class ShareSettings:
    """`gpt-launch share`: under whose name the W&B report is published."""

    entity: str | None = setting(None, "W&B entity (user or team) to publish under [default: the run's, else yours].")


@dataclass(frozen=True)
class ExportSettings:
    """`gpt-launch export`: the model card's licence, and an upload to the Hub."""

    license: str = setting(
        "mit", "Licence of the weights for the model card (the data's CDLA-Sharing-1.0 is stated either way)."
    )
    push: str | None = setting(None, "Also upload OUT to this Hugging Face Hub repo (user/name).")
    private: bool = setting(False, "With --push: create the repo private.")


@dataclass(frozen=True)
class SweepSettings:
    """`gpt-launch sweep`: the study (where it lives, how it samples and prunes) and its trials."""

    trials: int = setting(16, "Trials the study runs in all, shared by every worker on it.", at_least=1)
    output_dir: str = setting(
        "sweeps/sweep", "The sweep's folder: a run folder per trial, the study's SQLite file, the report."
    )
    storage: str | None = setting(
        None,
        "Where the study lives, for several workers: an SQLAlchemy URL (sqlite:///path.db, postgresql://user@host/db) "
        "or journal:PATH (a file on a shared disk) [default: sqlite in --output-dir].",
    )
    study_name: str | None = setting(None, "The study's name in the storage [default: --output-dir's folder name].")
    objective: Literal["bits_per_byte", "loss"] = setting(
        "bits_per_byte", "Minimised: each trial's best validation bits per byte, or loss."
    )
    sampler: Literal["tpe", "random"] = setting("tpe", "Optuna's sampler (TPE draws its first 4 trials at random).")
    pruner: Literal["median", "halving", "none"] = setting(
        "median",
        "Stop a trial at a validation where it is hopeless: below the median of earlier trials at that step, or "
        "successive halving; none runs every trial to its end.",
    )
    prune_after: int = setting(4, "Trials that finish before the median pruner judges others.", at_least=1)
    sampler_seed: int = setting(
        0, "The sampler's seed: the same seed, space and flags give the same trials.", at_least=0
    )
    processes: int = setting(
        1, "Processes per trial: above 1, each trial is an `accelerate launch --num_processes N` run.", at_least=1
    )
    grace_period: int = setting(
        60,
        "Seconds a worker's trial may go without a heartbeat (SQL storages) before another worker fails and "
        "retries it.",
        at_least=2,
    )
    report: bool = setting(False, "Only write the report of --output-dir's study (best trial, table, plots).")

    def __post_init__(self) -> None:
        check_fields(self)  # counts and seconds in their bounds, before any storage is opened
