"""The training loop: one plain Accelerate loop for CPU, one GPU, several GPUs and DeepSpeed.

Accelerate does device placement, mixed precision (fp16 with loss scaling, bf16, fp32 on CPU),
gradient accumulation, data sharding and checkpoint state. We keep the schedule ourselves, counted
in optimizer steps that really happened: a prepared scheduler would step once per process per
update under several processes, and not at all for a skipped fp16 step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt_core import GPT, IGNORE_INDEX, GPTConfig, generate, get_preset, get_tokenizer, load_pretrained

from . import checkpoint as ckpt
from .data import SMOKE_DATA, DataConfig, make_dataloader, make_dataset, prepare_data
from .errors import UserError
from .evaluate import evaluate
from .report import plot_curves
from .tracking import TRACKERS, RunLog, read_metrics, scrub

PAPER_PROMPTS = ("Once upon a time", "The little girl", "In a magical forest", "The brave knight")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, with the paper's defaults. A recipe is one of these."""

    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "paper"
    model_config_file: str | None = None  # a GPTConfig JSON; replaces the preset
    norm: str | None = None  # override the preset's LayerNorm placement ("post" | "pre")
    dropout: float | None = None
    layout: str = "packed"  # "packed" | "padded" (the paper's one-story-per-row layout)
    batch_size: int | None = None  # per process; None: 4 on GPU, 2 on CPU
    grad_accum: int = 8
    epochs: int = 10
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    # The run's planned length (the LR schedule spans it): epochs, cut by these if given.
    max_steps: int | None = None
    max_tokens: int | None = None
    # Pauses: end this session with a checkpoint; --resume auto carries on with the same schedule.
    max_minutes: float | None = None
    stop_after_steps: int | None = None
    eval_every: int | None = None  # also evaluate every N optimizer steps (always at each epoch end)
    eval_batches: int | None = None  # cap on validation batches per evaluation (None: all)
    patience: int = 3
    log_every: int = 10
    save_every: int | None = None  # also checkpoint every N optimizer steps (always at each epoch end)
    keep_last: int = 2
    output_dir: str = "runs/tinystories"
    resume: str | None = None  # a checkpoint folder or "auto"
    tracker: str = "none"
    project: str = "gpt-launch"
    run_name: str | None = None
    log_checkpoint: bool = False  # upload the best checkpoint to W&B as an artifact
    seed: int = 1234
    mixed_precision: str | None = None  # None: as `accelerate config`/--mixed_precision says
    compile: bool = False
    sample_tokens: int = 300
    prompts: tuple[str, ...] = PAPER_PROMPTS

    def __post_init__(self) -> None:
        checks = [
            (self.grad_accum >= 1, f"--grad-accum must be >= 1, got {self.grad_accum}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}"),
            (self.patience >= 1, f"--patience must be >= 1, got {self.patience}"),
            (self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}"),
            (self.keep_last >= 1, f"--keep-last must be >= 1, got {self.keep_last}"),
            (self.tracker in TRACKERS, f"--tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}"),
            (self.layout in ("packed", "padded"), f"--layout must be packed or padded, got {self.layout!r}"),
            (self.mixed_precision in (None, "no", "fp16", "bf16"), "--mixed-precision must be no, fp16 or bf16"),
        ]
        for limit in ("max_steps", "max_tokens", "stop_after_steps", "eval_every", "save_every", "eval_batches"):
            value = getattr(self, limit)
            checks.append((value is None or value >= 1, f"--{limit.replace('_', '-')} must be >= 1, got {value}"))
        checks.append((self.max_minutes is None or self.max_minutes > 0, "--max-minutes must be > 0"))
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        self.model_config()  # an unknown preset or an impossible model fails here, before any work

    def model_config(self) -> GPTConfig:
        overrides = {k: v for k, v in (("norm", self.norm), ("dropout", self.dropout)) if v is not None}
        base = GPTConfig.load(self.model_config_file) if self.model_config_file else get_preset(self.preset)
        return base.replace(**overrides)

    def to_dict(self) -> dict:
        return scrub(dataclasses.asdict(self))


def smoke_config(**overrides) -> TrainConfig:
    """The `--smoke` run: a small model, a few short stories, a few steps; every stage exercised."""
    smoke = dict(
        data=DataConfig(source=str(SMOKE_DATA)), preset="small", batch_size=2, grad_accum=2, epochs=8,
        max_steps=32, warmup_steps=4, lr=3e-3, log_every=2, eval_every=6, sample_tokens=40,
        output_dir="runs/smoke",
    )
    return TrainConfig(**{**smoke, **overrides})


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup over `warmup_steps` optimizer steps, then cosine annealing to 0 at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (LayerNorm gains and biases are not decayed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass (CPU and CUDA alike).
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next optimizer step and exits."""

    def __init__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class TrainingInterrupted(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process if it is true on any: all must stop (and checkpoint) at the same step."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _no_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not (torch.cuda.is_available() or (mps and mps.is_available()) or (xpu and xpu.is_available()))


def make_accelerator(**kwargs):
    """An Accelerator that sees every process, also on a machine without a GPU.

    Under `accelerate launch --multi_gpu` (torchrun) on a CPU-only machine, Accelerate takes the run
    for multi-process only when told the device is the CPU, and DeepSpeed only when given the gloo
    backend explicitly; otherwise each rank silently trains alone as "process 0 of 1".
    """
    from accelerate import Accelerator, PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if _no_accelerator() and launched > 1:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            PartialState(backend="gloo")
        else:
            kwargs["cpu"] = True
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != launched:
        raise UserError(
            f"the launcher started {launched} processes but Accelerate sees {accelerator.num_processes}; "
            "launch with `accelerate launch --multi_gpu --num_processes N` (or one of launch/*.yaml)"
        )
    return accelerator


def train(cfg: TrainConfig) -> dict:
    from accelerate.utils import DataLoaderConfiguration, set_seed

    start_time = time.time()
    run_dir = Path(cfg.output_dir)
    accelerator = make_accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=str(run_dir),
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )
    say = accelerator.print
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    model_config = cfg.model_config()
    if cfg.mixed_precision == "bf16" and accelerator.device.type == "cpu":
        say("note: bf16 matmuls on CPUs without AMX/AVX-512 BF16 are far slower than fp32")

    # --- data: one process tokenizes, the others read its cache --------------------------------
    data = prepare_data(cfg.data, accelerator.main_process_first, log=say)
    context = model_config.context_length
    batch_size = cfg.batch_size or (4 if accelerator.device.type == "cuda" else 2)
    datasets = {name: make_dataset(split, context, cfg.layout) for name, split in data.splits.items()}
    if cfg.layout == "padded":
        d = datasets["train"]
        say(f"data: padded layout, {d.truncated:,} train stories truncated to {context} tokens, "
            f"{d.padding_fraction:.1%} of train positions are padding")
    pin = accelerator.device.type == "cuda"
    train_dl = make_dataloader(datasets["train"], batch_size, cfg.seed, True, True, pin)
    val_dl = make_dataloader(datasets["validation"], batch_size, cfg.seed, False, False, pin)
    test_dl = make_dataloader(datasets["test"], batch_size, cfg.seed, False, False, pin)

    # --- model and optimizer ----------------------------------------------------------------------
    model = GPT(model_config)
    say(f"model: preset {cfg.preset}, {model.num_params():,} parameters, norm={model_config.norm}")
    if cfg.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(model, cfg, accelerator.device)
    model, optimizer, train_dl, val_dl, test_dl = accelerator.prepare(model, optimizer, train_dl, val_dl, test_dl)
    if len(train_dl) == 0:
        raise UserError(
            f"the train split has {len(datasets['train'])} rows, fewer than one batch per process "
            f"({batch_size} x {accelerator.num_processes}); lower --batch-size or give --data more stories"
        )
    steps_per_epoch = math.ceil(len(train_dl) / cfg.grad_accum)
    tokens_per_step = batch_size * context * cfg.grad_accum * accelerator.num_processes
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    if cfg.max_tokens:
        total_steps = min(total_steps, math.ceil(cfg.max_tokens / tokens_per_step))

    # --- resume -------------------------------------------------------------------------------------
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "tokens": 0, "best_val_loss": None,
             "evals_without_improvement": 0, "best_step": None, "resumed_from": None}
    resume_from = ckpt.resolve_resume(cfg.resume, run_dir) if cfg.resume else None
    if cfg.resume == "auto" and resume_from is None:
        say(f"resume: no checkpoint under {ckpt.checkpoints_dir(run_dir)} yet, starting from scratch")
    if resume_from is not None:
        state.update(ckpt.read_checkpoint(resume_from, model_config))
        ckpt.load_training_state(accelerator, resume_from)
        state["resumed_from"] = str(resume_from)
        say(f"resume: {resume_from} (step {state['step']}, epoch {state['epoch'] + 1}, "
            f"batch {state['batch_in_epoch']} of {len(train_dl)})")
    run_name = cfg.run_name or run_dir.name
    log = RunLog(accelerator, run_dir, cfg.tracker, cfg.project, run_name, cfg.to_dict(),
                 state["step"] if resume_from is not None else None)
    if accelerator.is_main_process:
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    say(f"train: {accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
        f"{accelerator.mixed_precision}, batch {batch_size} x accumulation {cfg.grad_accum} x "
        f"{accelerator.num_processes} = {tokens_per_step:,} tokens per optimizer step, {total_steps:,} steps "
        f"({steps_per_epoch:,} per epoch)")

    def save(kind: str) -> Path:
        path = ckpt.save_checkpoint(accelerator, model, model_config, run_dir, state, cfg.keep_last)
        say(f"checkpoint: {path} ({kind})")
        return path

    def run_eval(epoch: int, epoch_end: bool) -> bool:
        """Validate, keep the best weights, and return True when early stopping says stop."""
        metrics = evaluate(model, val_dl, accelerator, cfg.eval_batches)
        log.log({"kind": "eval", "step": state["step"], "epoch": epoch, "epoch_end": epoch_end, **metrics})
        say(f"eval: step {state['step']} loss {metrics['loss']:.4f} perplexity {metrics['perplexity']:.2f} "
            f"accuracy {metrics['accuracy']:.4f} ({metrics['tokens']:,} tokens)")
        if state["best_val_loss"] is None or metrics["loss"] < state["best_val_loss"]:
            state.update(best_val_loss=metrics["loss"], best_step=state["step"], evals_without_improvement=0)
            state["best_validation"] = metrics
            ckpt.save_best(accelerator, model, model_config, run_dir, state)
        else:
            state["evals_without_improvement"] += 1
        # Accelerate's trigger: set on the main process, seen by every process at the same point.
        if accelerator.is_main_process and state["evals_without_improvement"] >= cfg.patience:
            accelerator.set_trigger()
        return accelerator.check_trigger()

    # --- the loop -----------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    stop_signal = StopSignal()
    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="train", unit="step", dynamic_ncols=True)

    def say(message: str) -> None:  # from here on, print above the progress bar instead of through it
        if accelerator.is_main_process:
            progress.write(message)

    running_loss = torch.zeros((), device=accelerator.device)
    micro_batches, step_tokens = 0, 0
    window_start, window_tokens0 = time.perf_counter(), state["tokens"]
    grad_norm, session_start_step, stop_reason, paused = None, state["step"], None, False
    model.train()
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            state["epoch"] = epoch
            train_dl.set_epoch(epoch)
            skip = state["batch_in_epoch"]
            for x, y in accelerator.skip_first_batches(train_dl, skip) if skip else train_dl:
                with accelerator.accumulate(model):
                    _, loss = model(x, y)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        for group in optimizer.param_groups:
                            group["lr"] = lr_at(state["step"], cfg, total_steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                # Losses stay on the device until a log step: no host sync per micro-batch.
                running_loss += loss.detach()
                micro_batches += 1
                state["batch_in_epoch"] += 1
                if cfg.layout == "packed":  # every position is a real target, on every process
                    step_tokens += y.numel() * accelerator.num_processes
                else:
                    step_tokens += int(accelerator.reduce((y != IGNORE_INDEX).sum(), reduction="sum"))
                if not accelerator.sync_gradients:
                    continue
                # ---- an optimizer update happened, unless an fp16 overflow made the scaler skip it ----
                step_done, step_tokens = step_tokens, 0
                if accelerator.optimizer_step_was_skipped:
                    continue
                state["step"] += 1
                state["tokens"] += step_done
                progress.update(1)
                if state["step"] % cfg.log_every == 0:
                    mean_loss = accelerator.reduce(running_loss / micro_batches, reduction="mean").item()
                    if not math.isfinite(mean_loss):
                        raise UserError(
                            f"the training loss became {mean_loss} by step {state['step']}; stopped without saving. "
                            f"Resume from the last good checkpoint with --resume auto and a lower --lr "
                            f"(now {cfg.lr}) or --mixed-precision bf16/no"
                        )
                    tokens_per_s = (state["tokens"] - window_tokens0) / (time.perf_counter() - window_start)
                    log.log({"kind": "train", "step": state["step"], "epoch": epoch, "loss": mean_loss,
                             "perplexity": math.exp(min(mean_loss, 700)), "lr": optimizer.param_groups[0]["lr"],
                             "grad_norm": None if grad_norm is None else float(grad_norm),
                             "tokens": state["tokens"], "tokens_per_s": tokens_per_s})
                    progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
                    running_loss.zero_()
                    micro_batches, window_start, window_tokens0 = 0, time.perf_counter(), state["tokens"]
                # ---- evaluation, checkpoints and session limits, at optimizer-step boundaries only ----
                at_epoch_or_run_end = state["batch_in_epoch"] >= len(train_dl) or state["step"] >= total_steps
                if cfg.eval_every and state["step"] % cfg.eval_every == 0 and not at_epoch_or_run_end:
                    if run_eval(epoch, epoch_end=False):
                        stop_reason = f"early stopping: no validation improvement in {cfg.patience} evaluations"
                if cfg.save_every and state["step"] % cfg.save_every == 0:
                    save("every --save-every steps")
                out_of_time = cfg.max_minutes is not None and time.time() - start_time > 60 * cfg.max_minutes
                out_of_steps = cfg.stop_after_steps is not None and state["step"] - session_start_step >= cfg.stop_after_steps
                if _any_process(accelerator, stop_signal.signum is not None or out_of_time or out_of_steps):
                    if state["batch_in_epoch"] >= len(train_dl):
                        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
                    save("pause")
                    how = f"--resume auto --output-dir {run_dir}"
                    if stop_signal.signum is not None:
                        name = signal.Signals(stop_signal.signum).name
                        raise TrainingInterrupted(f"{name} received: saved step {state['step']}; continue with {how}",
                                                  128 + stop_signal.signum)
                    stop_reason, paused = f"paused at step {state['step']} (session limit); continue with {how}", True
                if stop_reason or state["step"] >= total_steps:
                    break
            if paused:
                break
            epoch_done = state["batch_in_epoch"] >= len(train_dl)
            if epoch_done:
                state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            if epoch_done or (state["step"] >= total_steps and not stop_reason):  # validate and checkpoint
                if run_eval(epoch, epoch_end=epoch_done):
                    stop_reason = f"early stopping: no validation improvement in {cfg.patience} evaluations"
                save("end of epoch" if epoch_done else "end of run")
            if stop_reason or state["step"] >= total_steps:
                break
        stop_reason = stop_reason or "completed"
    finally:
        progress.close()
        stop_signal.restore()

    summary = None
    if not paused:
        summary = _finish(cfg, accelerator, run_dir, state, model_config, test_dl, log, stop_reason, start_time, data)
    else:
        say(stop_reason)
    log.finish()
    accelerator.wait_for_everyone()
    return summary or {"stop_reason": stop_reason, "steps": state["step"]}  # paused runs have no summary


def _finish(cfg, accelerator, run_dir, state, model_config, test_dl, log, stop_reason, start_time, data):
    """Test metrics and samples from the best weights, curves, summary.json."""
    say = accelerator.print
    best_dir = ckpt.find_best(run_dir)
    # A plain gpt_core model from the best safetensors: the same path under DDP, ZeRO-2 and ZeRO-3.
    best = load_pretrained(best_dir).to(accelerator.device)
    test = evaluate(best, test_dl, accelerator)
    say(f"test (best weights, step {state['best_step']}): loss {test['loss']:.4f} "
        f"perplexity {test['perplexity']:.2f} accuracy {test['accuracy']:.4f}")
    log.log({"kind": "test", "step": state["step"], **test})
    summary = {"stop_reason": stop_reason, "steps": state["step"], "test": test}  # what every process knows
    if accelerator.is_main_process:
        tokenizer = get_tokenizer()
        samples = []
        for i, prompt in enumerate(cfg.prompts):
            ids = generate(best, tokenizer.encode(prompt), cfg.sample_tokens, seed=cfg.seed + i)
            text = tokenizer.decode([t for t in ids if t != tokenizer.eot_id])
            samples.append({"prompt": prompt, "text": text})
            say(f"sample: {prompt}{text}\n")
        curves = plot_curves(read_metrics(run_dir), run_dir / "curves.png")
        train_records = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r.get("tokens_per_s")]
        summary = {
            "stop_reason": stop_reason,
            "steps": state["step"],
            "epochs_completed": state["epoch"],
            "tokens": state["tokens"],
            "best_step": state["best_step"],
            "best_validation": state.get("best_validation"),
            "test": test,
            "samples": samples,
            "throughput_tokens_per_s": (sum(r["tokens_per_s"] for r in train_records) / len(train_records))
            if train_records else 0.0,
            "elapsed_seconds": time.time() - start_time,
            "model": {"preset": cfg.preset, "parameters": model_config.num_params(), **model_config.to_dict()},
            "data": {"cache": str(data.cache_dir), **data.meta},
            "hardware": {"device": _device_name(accelerator.device), "processes": accelerator.num_processes,
                         "mixed_precision": accelerator.mixed_precision, "torch": torch.__version__,
                         "python": platform.python_version()},
            "best_checkpoint": str(best_dir),
            "config": cfg.to_dict(),
        }
        (run_dir / "summary.json").write_text(json.dumps(scrub(summary), indent=2) + "\n")
        log.log_samples(samples, state["step"])
        log.log_image("curves", curves, state["step"])
        log.log_summary({k: summary[k] for k in ("best_validation", "test", "throughput_tokens_per_s", "steps")}
                        | {"parameters": model_config.num_params()})
        if cfg.log_checkpoint:
            log.log_artifact(best_dir, f"{cfg.run_name or run_dir.name}-best")
        say(f"done: {stop_reason}; summary in {run_dir / 'summary.json'}, curves in {curves}")
    accelerator.wait_for_everyone()
    return summary


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
