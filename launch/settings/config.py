"""Every setting of a run, defined once: a typed field with its default, help text and flag.

The defaults *are* the paper's recipe (one home for its numbers); `recipes/tinystories.py` only
names the run. The CLI builds its options from these fields (options.py), so a new field gets a
flag without a second definition; `Literal[...]` types give both the choices and the validation,
and every error message names the flag a user would type.

Each field also says what changing it on `--resume` means (`on_resume`):
  fixed   the run could no longer continue exactly (data, model, batch): refused unless --allow-changes;
  warn    allowed, with a warning (the schedule or the optimizer changes from here on);
  free    may change freely (logging, tracker, checkpoint retention);
  session belongs to one session and is not taken over from the saved settings (time limits, pauses).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt_core import GPTConfig, get_preset
from gpt_core.config import PRESETS
from gpt_core.files import write_json
from gpt_core.tokenizer import GPT2_VOCAB_SIZE, TOKENIZER_NAME, TokenizerError, load_tokenizer
from launch.checkpoints.weights import init_weights_config, init_weights_tokenizer
from launch.errors import UserError, is_disk_full

from .fields import check_fields, flag_for, setting

PAPER_PROMPTS = ("Once upon a time", "The little girl", "In a magical forest", "The brave knight")
SMOKE_DATA = Path(__file__).parents[1] / "configs" / "smoke_stories.jsonl"
RUN_CONFIG_NAME = "train_config.json"  # a run folder's settings, written at each start
BATCH_SIZE_RULE = "4 on a GPU (the paper's RTX 3050), 2 on a CPU"


def batch_size_on(device_type: str, given: int | str | None = None) -> int:
    """Rows per micro-batch: the number given, else the device's default (BATCH_SIZE_RULE). A
    training run's "auto" is found before this is asked (training/autobatch.py); elsewhere it
    stands for the default too."""
    return given if isinstance(given, int) else 4 if device_type == "cuda" else 2


@dataclass(frozen=True)
class DataConfig:
    """Where the stories come from and how they are cut (the data pipeline is `launch.data`)."""

    source: str = setting(
        "roneneldan/TinyStories",
        "Stories: a Hugging Face hub id, or a local file, folder or glob "
        "(.txt with <|endoftext|> separators, .jsonl/.json, .parquet, each optionally .gz).",
        flag="--data",
        on_resume="fixed",
    )
    text_field: str = setting("text", "Field holding the story text.", on_resume="fixed")
    hub_split: str = setting("train", "Split of a hub dataset to read the stories from.", on_resume="fixed")
    split_mode: Literal["paper", "shuffle", "source"] = setting(
        "paper",
        "paper: the first --max-samples stories cut train/validation/test in order; shuffle: the same after "
        "a shuffle seeded by --seed; source: all train, held-out stories from the hub's validation split or "
        "--heldout-data.",
        on_resume="fixed",
    )
    heldout_source: str | None = setting(
        None, "Held-out stories for --split-mode source.", flag="--heldout-data", on_resume="fixed"
    )
    max_samples: int | None = setting(
        270_000,
        "Use the first N stories of the source (the paper: 270,000). 0 for all.",
        on_resume="fixed",
        at_least=3,
        zero_means_all=True,
    )
    train_fraction: float = setting(0.7, "Share of the stories for training.", on_resume="fixed", above=0)
    validation_fraction: float = setting(
        0.2, "Share for validation; the rest is the test split.", on_resume="fixed", above=0
    )
    tokenizer: str | None = setting(
        None,
        "A tokenizer.json, or a folder holding one (`gpt-launch tokenizer train`'s output, a run, a checkpoint, "
        "an export), or gpt2 [default: GPT-2 BPE; with --init-from, that model's; the model's vocabulary follows it].",
        on_resume="fixed",
    )
    min_chars: int = setting(
        20, "Stories shorter than this many characters are dropped as near-empty.", on_resume="fixed", at_least=1
    )
    cache_dir: str | None = setting(
        None, "Token cache folder [default: ~/.cache/gpt-launch].", flag="--data-cache", on_resume="free"
    )
    workers: int | None = setting(
        None,
        "Tokenizer processes for a first preparation of the data [default: the CPU cores available].",
        flag="--data-workers",
        on_resume="free",
        at_least=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.max_samples == 0:  # "0 for all", as the flag's help says
            object.__setattr__(self, "max_samples", None)
        if self.tokenizer is not None:
            self.load_tokenizer()  # a missing or unusable tokenizer file fails here, before any work
        if self.train_fraction + self.validation_fraction >= 1:
            raise UserError(
                f"--train-fraction {self.train_fraction} plus --validation-fraction {self.validation_fraction} "
                "must leave room for a test split (e.g. 0.7 and 0.2)"
            )

    def load_tokenizer(self):
        return load_tokenizer(self.tokenizer)

    def vocab_size(self) -> int:
        """The model's vocabulary: the tokenizer's (GPT-2 BPE's known without loading it)."""
        return GPT2_VOCAB_SIZE if self.tokenizer is None else self.load_tokenizer().vocab_size

    def cache_root(self) -> Path:
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpt-launch"
        return Path(self.cache_dir) if self.cache_dir else default


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. The defaults are the paper's recipe."""

    data: DataConfig = setting(help="The stories.", factory=DataConfig, on_resume="fixed")
    # ---- model ----
    preset: str | None = setting(
        None,
        f"Model shape: {', '.join(PRESETS)} [default: paper; with --init-from, that model's]. llama-small is "
        "small's budget as a Llama-style model (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases).",
        on_resume="fixed",
    )
    init_from: str | None = setting(
        None,
        "Start from these weights (a run, a checkpoint, an export, or a transformers GPT-2, OpenAI GPT, Llama or "
        "Qwen3 folder): "
        "the weights only; the optimizer, schedule and step start fresh, as in fine-tuning.",
        on_resume="fixed",
    )
    model_config_file: str | None = setting(
        None,
        "A model config JSON (fields as in a checkpoint's config.json); replaces --preset.",
        flag="--model-config",
        on_resume="fixed",
    )
    norm: Literal["post", "pre"] | None = setting(
        None,
        "LayerNorm placement; post is the paper's, pre trains more stably [default: the preset's].",
        on_resume="fixed",
    )
    dropout: float | None = setting(
        None, "Dropout [default: the preset's, 0.1 for paper].", on_resume="fixed", at_least=0
    )
    # ---- batches ----
    layout: Literal["packed", "padded", "documents"] = setting(
        "packed",
        "packed: stories concatenated into full rows (no padding); padded: one story per row, truncated (the "
        "paper's); documents: each story alone after <|endoftext|>, in windows (lm-evaluation-harness's framing).",
        on_resume="fixed",
    )
    batch_size: int | Literal["auto"] | None = setting(
        None,
        "Rows per process per (micro-)batch; auto (training on GPUs): the largest that fits, with --grad-accum "
        f"adjusted to keep the tokens per optimizer step [default: {BATCH_SIZE_RULE}].",
        on_resume="fixed",
        at_least=1,
    )
    grad_accum: int = setting(8, "Micro-batches per optimizer step.", on_resume="fixed", at_least=1)
    # ---- optimizer and schedule ----
    epochs: int = setting(10, "Maximum epochs (early stopping may end sooner).", at_least=1)
    optimizer: Literal["adamw", "muon"] = setting(
        "adamw",
        "adamw, or muon: torch's Muon for the matrices inside the blocks (at --muon-lr), AdamW for the "
        "embedding, output layer, norms and biases (at --lr). Not under DeepSpeed or FSDP.",
        on_resume="fixed",
    )
    lr: float = setting(2e-4, "Peak AdamW learning rate.", above=0)
    muon_lr: float = setting(
        0.02, "--optimizer muon: the Muon matrices' peak learning rate; the schedule scales it as --lr's.", above=0
    )
    betas: tuple[float, float] = setting((0.9, 0.95), "AdamW betas (two numbers).")
    weight_decay: float = setting(0.01, "AdamW (and Muon) weight decay (matrices only).", at_least=0)
    warmup_steps: int = setting(500, "Linear warmup, in optimizer steps, before the schedule.", at_least=0)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = setting(
        "cosine",
        "After warmup: cosine or linear decay to --min-lr, constant, or wsd (warmup-stable-decay: "
        "constant, then a linear decay over the last --decay-fraction of the steps).",
    )
    min_lr: float = setting(0.0, "The learning rate the decay ends at (the paper: 0).", at_least=0)
    decay_fraction: float = setting(0.2, "wsd: the share of the steps after warmup spent decaying.", above=0, at_most=1)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this value.", above=0)
    # The run's planned length (the LR schedule spans it): epochs, cut by these if given.
    max_steps: int | None = setting(None, "Cap the run at N optimizer steps (the schedule spans the cap).", at_least=1)
    max_tokens: int | None = setting(None, "Cap the run at N training tokens (the schedule spans the cap).", at_least=1)
    # ---- evaluation and early stopping ----
    eval_every: int | None = setting(
        None, "Also validate every N optimizer steps (always at each epoch end).", at_least=1
    )
    eval_batches: int | None = setting(None, "Validate on at most N batches per process [default: all].", at_least=1)
    test_batches: int | None = setting(
        None, "Test on at most N batches per process at the end [default: all].", on_resume="free", at_least=1
    )
    patience: int = setting(3, "Early stopping: evaluations without improvement.", at_least=1)
    # ---- this session: pauses, logging, checkpoints ----
    max_minutes: float | None = setting(
        None, "Pause after N minutes with a checkpoint; --resume auto continues.", on_resume="session", above=0
    )
    stop_after_steps: int | None = setting(
        None, "Pause after N optimizer steps this session; --resume auto continues.", on_resume="session", at_least=1
    )
    log_every: int = setting(10, "Log (and read the loss back) every N optimizer steps.", on_resume="free", at_least=1)
    save_every: int | None = setting(
        None, "Also checkpoint every N optimizer steps (always at each epoch end).", on_resume="free", at_least=1
    )
    keep_last: int = setting(2, "Step checkpoints to keep (the best one is kept apart).", on_resume="free", at_least=1)
    output_dir: str = setting(
        "runs/tinystories", "Run folder: checkpoints, metrics.jsonl, curves.png, summary.json.", on_resume="free"
    )
    resume: str | None = setting(
        None,
        "Continue from a checkpoints/step-N folder, or 'auto' for this run's newest; "
        "the run's saved settings apply, changed only by the flags given.",
        on_resume="free",
    )
    allow_changes: bool = setting(
        False,
        "On --resume, accept changes to settings that break exact continuation (data, model, batch, seed).",
        on_resume="session",
    )
    overwrite: bool = setting(
        False,
        "Start a new run in an --output-dir that already holds one: its checkpoints, logs and summary are deleted.",
        on_resume="session",
    )
    # ---- tracking ----
    tracker: Literal["none", "wandb", "tensorboard"] = setting(
        "none", "wandb (honours WANDB_MODE=offline) or tensorboard; metrics.jsonl is always written.", on_resume="free"
    )
    project: str = setting("gpt-launch", "W&B / TensorBoard project name.", on_resume="free")
    run_name: str | None = setting(
        None, "Run name for the tracker [default: the output folder's name].", on_resume="free"
    )
    log_checkpoint: bool = setting(False, "Upload the best checkpoint to W&B as an artifact.", on_resume="free")
    # ---- the rest ----
    seed: int = setting(
        1234,
        "The seed of everything random (training: weights, the shuffled split, batch order, dropout, samples).",
        on_resume="fixed",
        at_least=0,
        at_most=2**32 - 1,  # what numpy's and Accelerate's seeding accept
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = setting(
        None,
        "Precision: no (fp32), or fp16/bf16 autocast [default: the Accelerate config's, as launched; fp32 on CPU].",
    )
    compile: bool = setting(
        False,
        "torch.compile the training step (faster on GPU after a warm-up); validation runs eagerly.",
        on_resume="free",
    )
    profile_steps: int | None = setting(
        None,
        "Write a torch.profiler trace of N optimizer steps (after 2 warm-up steps) to RUN/profile/ and print "
        "the top operators; those steps are left out of tokens/s.",
        on_resume="session",
        at_least=1,
    )
    activation_checkpointing: bool = setting(
        False,
        "Recompute each block in the backward pass: less memory for a bigger batch or context, ~1/3 more "
        "compute; the same losses.",
        on_resume="free",
    )
    collective_timeout: float = setting(
        1800,
        "Seconds a process waits for the others in one collective (gradient all-reduce, barrier, the first "
        "data build) before it gives up with an error naming its rank; a hung peer then ends the run instead of "
        "hanging it.",
        at_most=365 * 24 * 3600,  # a year: longer overflows the process group's timer
        on_resume="free",
        above=0,
    )
    sample_tokens: int = setting(300, "Length of the sample stories at the end.", on_resume="free", at_least=0)
    prompts: tuple[str, ...] = setting(
        PAPER_PROMPTS,
        "Prompts for the sample stories at the end (repeat the flag for several).",
        flag="--prompt",
        on_resume="free",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.init_from and self.data.tokenizer is None:  # a model's vocabulary is its tokenizer's
            own = init_weights_tokenizer(self.init_from)
            object.__setattr__(self, "data", dataclasses.replace(self.data, tokenizer=own))
        if not all(0 <= beta < 1 for beta in self.betas):
            raise UserError(
                f"--betas must be two numbers in [0, 1), got {' '.join(map(str, self.betas))}; e.g. 0.9 0.95"
            )
        if self.min_lr > self.lr:
            raise UserError(f"--min-lr {self.min_lr} is above --lr {self.lr}; the decay goes down to it")
        if not self.output_dir.strip():
            raise UserError("--output-dir is empty; name the run's folder, e.g. --output-dir runs/mine")
        self.model_config()  # an unknown preset or an impossible model fails here, before any work

    def check_prompts(self) -> None:
        """Each sample prompt fits the model: checked before any work, since sampling comes last."""
        from gpt_core.generation import check_generation_args

        context, tokenizer = self.model_config().context_length, self.data.load_tokenizer()
        for prompt in self.prompts:
            try:
                ids = tokenizer.encode(prompt)
                check_generation_args(ids, self.sample_tokens, 1.0, None, None, False, context)
            except ValueError as e:
                raise UserError(f"--prompt {prompt!r}: {e}") from None

    def architecture_flags(self) -> list[str]:
        """The flags given that chose the model's architecture (without them, --init-from's weights choose)."""
        return [
            flag_for(TrainConfig, n) for n in ("preset", "model_config_file", "norm") if getattr(self, n) is not None
        ]

    def model_config(self) -> GPTConfig:
        overrides = {k: v for k, v in (("norm", self.norm), ("dropout", self.dropout)) if v is not None}
        if self.model_config_file:
            base = GPTConfig.load(self.model_config_file)
        elif self.preset is None and self.init_from:
            base = init_weights_config(self.init_from)
        else:
            base = get_preset(self.preset or "paper")
        return base.replace(vocab_size=self.data.vocab_size(), **overrides)

    # ---- persistence: a run remembers its settings in train_config.json ----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        values["data"] = DataConfig(
            **{k: v for k, v in saved.get("data", {}).items() if k in {f.name for f in dataclasses.fields(DataConfig)}}
        )
        for name in ("betas", "prompts"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def save(self, run_dir: Path) -> None:
        """Write RUN/train_config.json atomically: whole, or (a full disk) not at all and one line."""
        path = Path(run_dir) / RUN_CONFIG_NAME
        try:
            write_json(path, self.to_dict())
        except OSError as e:
            why = "no space left: the disk, quota or file-size limit is full" if is_disk_full(e) else e.strerror
            raise UserError(f"could not write {path} ({why}); free space under {run_dir} and start again") from None

    @classmethod
    def load(cls, path: Path, own_tokenizer: Path | None = None) -> TrainConfig:
        """`own_tokenizer`: the copy to use when the saved tokenizer path no longer exists."""
        try:
            saved = json.loads(Path(path).read_text())
            if not isinstance(saved, dict):
                raise ValueError(f"it holds a JSON {type(saved).__name__}, not an object of settings")
            data = saved.get("data")
            moved = isinstance(data, dict) and data.get("tokenizer") and not Path(data["tokenizer"]).exists()
            if moved and own_tokenizer and own_tokenizer.is_file():
                data["tokenizer"] = str(own_tokenizer)
            return cls.from_dict(saved)
        except TokenizerError:
            raise  # its own line names the file and the fix
        except (ValueError, TypeError) as e:
            raise UserError(f"{path} is not a readable run config ({e}); fix it or start a new --output-dir") from None


def saved_run_config(run_dir: Path) -> TrainConfig | None:
    """The settings a run folder was started with, or None when it has none. A tokenizer file that
    has since moved is replaced by the run's own copy (RUN/tokenizer.json)."""
    path = Path(run_dir) / RUN_CONFIG_NAME
    return TrainConfig.load(path, own_tokenizer=Path(run_dir) / TOKENIZER_NAME) if path.is_file() else None


def smoke_config(base: TrainConfig | None = None) -> TrainConfig:
    """The `--smoke` run: a small model (a recipe's own preset when it is no wider than `small`, e.g.
    llama-small), the shipped stories, a few steps; every stage exercised."""
    base = base or TrainConfig()
    small = base.preset is not None and get_preset(base.preset).d_model <= get_preset("small").d_model
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, source=str(SMOKE_DATA)),
        preset=base.preset if small else "small",
        batch_size=2,
        grad_accum=2,
        epochs=8,
        max_steps=32,
        warmup_steps=4,
        lr=3e-3,
        log_every=2,
        eval_every=6,
        sample_tokens=40,
        output_dir="runs/smoke",
    )
