"""The training loop: one plain Accelerate loop for CPU, one GPU, several GPUs and DeepSpeed.

    run = build_run(cfg)          accelerator, data, model, optimizer; the saved state if resuming
    for each micro-batch:
        micro_step(run, x, y)     forward, backward; every grad_accum batches clip, lr, update
        after_step(run, ...)      after an update: log, evaluate, checkpoint, limits -> why we stop
    finish_run(run, reason)       test with the best weights, samples, curves, summary.json

Accelerate does device placement, mixed precision (fp16 with loss scaling, bf16, fp32 on CPU),
gradient accumulation, data sharding and checkpoint state. We keep the schedule ourselves, counted
in optimizer steps that really happened: a prepared scheduler would step once per process per
update under several processes, and not at all for a skipped fp16 step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt_core import GPT, IGNORE_INDEX, GPTConfig

from . import checkpoint as ckpt
from .config import TrainConfig, resume_changes, saved_run_config
from .data import PreparedData, make_dataloader, make_dataset, prepare_data
from .errors import UserError
from .evaluate import evaluate
from .runtime import (
    StopSignal,
    TrainingInterrupted,
    any_process,
    collective_failure,
    default_batch_size,
    make_accelerator,
    rank_print,
)
from .tracking import RunLog


# ---------------------------------------------------------------------------------------------
# Small, typed state: each piece saves and restores itself
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainerState:
    """Where the run stands. Saved in every checkpoint (trainer_state.json) with the early stopping."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # the epoch in progress, from 0
    batch_in_epoch: int = 0  # micro-batches of that epoch already trained
    tokens: int = 0  # real target tokens trained on, all processes together
    finished: str | None = None  # why the run ended, once it has

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, saved: dict) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, saved.get(f.name, f.default))


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without a lower validation loss."""

    patience: int
    best_val_loss: float | None = None
    best_step: int | None = None
    best_validation: dict | None = None
    evals_without_improvement: int = 0

    def update(self, metrics: dict, step: int) -> bool:
        """Record one evaluation; True when it is the best so far (its weights are worth keeping)."""
        if self.best_val_loss is None or metrics["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_step, self.best_validation = metrics["loss"], step, metrics
            self.evals_without_improvement = 0
            return True
        self.evals_without_improvement += 1
        return False

    def should_stop(self, accelerator) -> bool:
        """Accelerate's trigger: set on the main process, seen by every process at the same point."""
        if accelerator.is_main_process and self.evals_without_improvement >= self.patience:
            accelerator.set_trigger()
        return accelerator.check_trigger()

    def state_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "patience"}

    def load_state_dict(self, saved: dict) -> None:
        for name in self.state_dict():
            setattr(self, name, saved.get(name))
        self.evals_without_improvement = self.evals_without_improvement or 0


class LossWindow:
    """Training losses and tokens since the last log. Losses stay on the device until read, so no
    micro-batch waits for the host. Time spent `paused()` (validation, checkpoints) is left out of
    tokens/s, which measures training alone."""

    def __init__(self, device: torch.device, tokens: int):
        self.total, self.count = torch.zeros((), device=device), 0
        self.start, self.start_tokens = time.perf_counter(), tokens

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()
        self.count += 1

    def read(self, accelerator, tokens: int) -> tuple[float, float]:
        """(mean loss over every process's micro-batches, tokens/s), then start a new window."""
        mean = accelerator.reduce(self.total / max(self.count, 1), reduction="mean").item()
        tokens_per_s = (tokens - self.start_tokens) / (time.perf_counter() - self.start)
        self.total.zero_()
        self.count, self.start, self.start_tokens = 0, time.perf_counter(), tokens
        return mean, tokens_per_s

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began


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


# ---------------------------------------------------------------------------------------------
# Building a run
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    cfg: TrainConfig
    accelerator: object
    model_config: GPTConfig
    data: PreparedData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loaders: dict
    batch_size: int
    run_dir: Path
    total_steps: int = 0
    batches_per_epoch: int = 0
    state: TrainerState = field(default_factory=TrainerState)
    early: EarlyStopping | None = None
    log: RunLog | None = None
    window: LossWindow | None = None
    progress: object = None
    grad_norm: torch.Tensor | None = None
    step_tokens: int = 0  # tokens of the update being accumulated
    session_start_step: int = 0
    start_time: float = field(default_factory=time.time)

    def say(self, message: str) -> None:
        """Print once, from the main process, above the progress bar."""
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def checkpoint_state(self) -> dict:
        return self.state.state_dict() | self.early.state_dict()


def check_run_dir(run_dir: Path, create: bool = False) -> None:
    """Fail early, in one line, when the run folder cannot be made (e.g. a path under a file); it is
    created only once the data and model are ready, so a failed start leaves no empty folder."""
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    problem = None if existing.is_dir() else f"{existing} is a file"
    if create and problem is None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problem = e.strerror
    if problem:
        raise UserError(f"cannot create the run folder {run_dir} ({problem}); choose another --output-dir")


def build_run(cfg: TrainConfig, resume_from: Path | None) -> Run:
    from accelerate.utils import DataLoaderConfiguration, set_seed

    check_run_dir(Path(cfg.output_dir))
    accelerator = make_accelerator(
        cfg.collective_timeout,
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=cfg.output_dir,
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )
    set_seed(cfg.seed)
    model_config = cfg.model_config()
    if cfg.mixed_precision == "bf16" and accelerator.device.type == "cpu":
        accelerator.print("note: bf16 matmuls on CPUs without AMX/AVX-512 BF16 are far slower than fp32")
    # data: the first process to take the cache's lock tokenizes, the others say they wait, then read it
    data = prepare_data(cfg.data, cfg.seed, log=accelerator.print, say=rank_print)
    batch_size = cfg.batch_size or default_batch_size(accelerator.device)
    datasets = {
        name: make_dataset(split, model_config.context_length, cfg.layout) for name, split in data.splits.items()
    }
    if cfg.layout == "padded":
        d = datasets["train"]
        accelerator.print(
            f"data: padded layout, {d.truncated:,} train stories truncated to "
            f"{model_config.context_length} tokens, {d.padding_fraction:.1%} of train positions are padding"
        )
    pin = accelerator.device.type == "cuda"
    loaders = {
        name: make_dataloader(
            ds, batch_size, cfg.seed, shuffle=name == "train", drop_last=name == "train", pin_memory=pin
        )
        for name, ds in datasets.items()
    }
    # model and optimizer
    model = GPT(model_config)
    accelerator.print(f"model: preset {cfg.preset}, {model.num_params():,} parameters, norm={model_config.norm}")
    if cfg.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(model, cfg, accelerator.device)
    ckpt.store_weights_once(accelerator)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    run = Run(
        cfg,
        accelerator,
        model_config,
        data,
        model,
        optimizer,
        dict(zip(loaders, prepared, strict=True)),
        batch_size,
        Path(cfg.output_dir),
        early=EarlyStopping(cfg.patience),
    )
    _plan_length(run)
    if accelerator.is_main_process:
        check_run_dir(run.run_dir, create=True)
        stale = ckpt.remove_stale_temporaries(run.run_dir)
        if stale:
            run.say(
                f"checkpoint: removed {len(stale)} unfinished temporary folder(s) of an interrupted save: {', '.join(stale)}"
            )
    if resume_from is not None:
        _restore(run, resume_from)
    run.session_start_step = run.state.step
    run.log = RunLog(
        accelerator,
        run.run_dir,
        cfg.tracker,
        cfg.project,
        cfg.run_name or run.run_dir.name,
        cfg.to_dict(),
        run.state.step if resume_from is not None else None,
    )
    if accelerator.is_main_process:
        cfg.save(run.run_dir)
    return run


def _plan_length(run: Run) -> None:
    """The run's length in optimizer steps: epochs, cut by --max-steps / --max-tokens."""
    cfg, acc = run.cfg, run.accelerator
    run.batches_per_epoch = len(run.loaders["train"])
    if run.batches_per_epoch == 0:
        raise UserError(
            f"the train split has {len(run.loaders['train'].dataset)} rows, fewer than one batch per process "
            f"({run.batch_size} x {acc.num_processes}); lower --batch-size or give --data more stories"
        )
    steps_per_epoch = math.ceil(run.batches_per_epoch / cfg.grad_accum)
    tokens_per_step = run.batch_size * run.model_config.context_length * cfg.grad_accum * acc.num_processes
    run.total_steps = min(
        cfg.epochs * steps_per_epoch,
        cfg.max_steps or math.inf,
        math.ceil(cfg.max_tokens / tokens_per_step) if cfg.max_tokens else math.inf,
    )
    acc.print(
        f"train: {acc.num_processes} process(es) on {acc.device}, mixed precision {acc.mixed_precision}, batch "
        f"{run.batch_size} x accumulation {cfg.grad_accum} x {acc.num_processes} = {tokens_per_step:,} tokens per "
        f"optimizer step, {run.total_steps:,} steps ({steps_per_epoch:,} per epoch)"
    )


def _restore(run: Run, path: Path) -> None:
    saved = ckpt.read_checkpoint(path, run.model_config)
    ckpt.load_training_state(run.accelerator, run.model, path)
    run.state.load_state_dict(saved)
    run.early.load_state_dict(saved)
    run.say(
        f"resume: {path} (step {run.state.step}, epoch {run.state.epoch + 1}, "
        f"batch {run.state.batch_in_epoch} of {run.batches_per_epoch})"
    )


def check_resume(cfg: TrainConfig, resume_from: Path, say=print) -> None:
    """Compare the settings with those the run was started with: refuse what breaks exact
    continuation (unless --allow-changes), warn about what changes the run from here on."""
    saved = saved_run_config(resume_from.parent.parent)
    if saved is None:
        return
    changes = resume_changes(saved, cfg)
    if changes["fixed"] and not cfg.allow_changes:
        raise UserError(
            f"--resume with changed settings the run cannot continue exactly with ({'; '.join(changes['fixed'])}); "
            "drop those flags, add --allow-changes to accept them, or start a new --output-dir"
        )
    for change in changes["fixed"] + changes["warn"]:
        say(f"resume: warning: {change}; the run continues with the new value")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    resume_from = ckpt.resolve_resume(cfg.resume, Path(cfg.output_dir)) if cfg.resume else None
    if cfg.resume == "auto" and resume_from is None:
        print(f"resume: no checkpoint under {ckpt.checkpoints_dir(Path(cfg.output_dir))} yet, starting from scratch")
    if resume_from is not None:
        finished = ckpt.read_trainer_state(resume_from).get("finished")
        if finished:
            print(
                f"resume: the run in {cfg.output_dir} is complete ({finished}, {resume_from.name}); nothing to do. "
                "Its results are in summary.json; to train again, use a new --output-dir"
            )
            return {"stop_reason": f"already finished: {finished}", "steps": None}
        check_resume(cfg, resume_from)
    from tqdm.auto import tqdm

    with collective_errors(cfg):
        run = build_run(cfg, resume_from)
        run.window = LossWindow(run.accelerator.device, run.state.tokens)
        reason = None
        run.progress = tqdm(
            total=run.total_steps,
            initial=run.state.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not run.accelerator.is_local_main_process,
        )
        with StopSignal() as stop_signal, run.progress:
            run.model.train()
            while reason is None and run.state.epoch < cfg.epochs:
                for x, y in epoch_batches(run):
                    if micro_step(run, x, y) and (reason := after_step(run, stop_signal)):
                        break
        return finish_run(run, reason or "completed")


@contextlib.contextmanager
def collective_errors(cfg: TrainConfig):
    """A collective that timed out or lost its peer becomes one line naming this rank, not a traceback."""
    try:
        yield
    except RuntimeError as e:
        failure = collective_failure(e, cfg.collective_timeout)
        if failure is None:
            raise
        raise failure from None


def epoch_batches(run: Run):
    """The micro-batches of the epoch in progress, from where a resumed run left off."""
    state = run.state
    if state.batch_in_epoch >= run.batches_per_epoch:  # its last update was skipped (fp16 overflow)
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    loader = run.loaders["train"]
    loader.set_epoch(state.epoch)
    skip = state.batch_in_epoch
    return run.accelerator.skip_first_batches(loader, skip) if skip else loader


def micro_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Forward and backward one micro-batch; at every grad_accum-th (and an epoch's last) also clip,
    set the lr and update. True when an optimizer update really happened."""
    acc, state, cfg = run.accelerator, run.state, run.cfg
    with acc.accumulate(run.model):
        _, loss = run.model(x, y)
        acc.backward(loss)
        if acc.sync_gradients:
            run.grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(state.step, cfg, run.total_steps)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.window.add(loss)
    state.batch_in_epoch += 1
    if cfg.layout == "packed":  # every position is a real target, on every process
        run.step_tokens += y.numel() * acc.num_processes
    else:
        run.step_tokens += int(acc.reduce((y != IGNORE_INDEX).sum(), reduction="sum"))
    if not acc.sync_gradients:
        return False
    step_tokens, run.step_tokens = run.step_tokens, 0
    if acc.optimizer_step_was_skipped:  # an fp16 overflow: the scaler skipped this update
        return False
    state.step += 1
    state.tokens += step_tokens
    return True


def after_step(run: Run, stop_signal: StopSignal) -> str | None:
    """Everything that happens between optimizer updates, in order. Returns why the run stops here:
    finished (completed, early stopping) or paused (a signal or a session limit); None to go on."""
    cfg, state = run.cfg, run.state
    run.progress.update(1)
    if state.step % cfg.log_every == 0:
        log_training(run)
    epoch = state.epoch
    epoch_end = state.batch_in_epoch >= run.batches_per_epoch
    if epoch_end:
        state.epoch, state.batch_in_epoch = epoch + 1, 0
    last_step = state.step >= run.total_steps or state.epoch >= cfg.epochs
    finished = "completed" if last_step else None
    if epoch_end or last_step or (cfg.eval_every and state.step % cfg.eval_every == 0):
        with run.window.paused():
            stop_early = validate(run, epoch, epoch_end)
        if stop_early:
            finished = f"early stopping: no validation improvement in {cfg.patience} evaluations"
    paused = pause_reason(run, stop_signal)
    state.finished = None if paused else finished  # a signal at the last step: resume finishes the run
    if finished or paused or epoch_end or (cfg.save_every and state.step % cfg.save_every == 0):
        with run.window.paused():
            save(run, paused or finished or ("end of epoch" if epoch_end else "every --save-every steps"))
    if paused == SIGNALLED:
        what, code = (
            (f"{stop_signal.name} received", 128 + stop_signal.signum)
            if stop_signal.signum
            else ("another process was signalled", 143)
        )
        raise TrainingInterrupted(
            f"{what}: saved step {state.step}; continue with --resume auto --output-dir {run.run_dir}", code
        )
    return paused or finished


def log_training(run: Run) -> None:
    state = run.state
    mean_loss, tokens_per_s = run.window.read(run.accelerator, state.tokens)
    if not math.isfinite(mean_loss):
        raise UserError(
            f"the training loss became {mean_loss} by step {state.step}; stopped without saving. Resume from the "
            f"last good checkpoint with --resume auto and a lower --lr (now {run.cfg.lr}) or --mixed-precision bf16/no"
        )
    run.log.log(
        {
            "kind": "train",
            "step": state.step,
            "epoch": state.epoch,
            "loss": mean_loss,
            "perplexity": math.exp(min(mean_loss, 700)),
            "lr": run.optimizer.param_groups[0]["lr"],
            "grad_norm": None if run.grad_norm is None else float(run.grad_norm),
            "tokens": state.tokens,
            "tokens_per_s": tokens_per_s,
        }
    )
    run.progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")


def validate(run: Run, epoch: int, epoch_end: bool) -> bool:
    """Evaluate on the validation split, keep the best weights; True when early stopping says stop."""
    metrics = evaluate(run.model, run.loaders["validation"], run.accelerator, run.cfg.eval_batches)
    step = run.state.step
    run.log.log({"kind": "eval", "step": step, "epoch": epoch, "epoch_end": epoch_end, **metrics})
    run.say(
        f"eval: step {step} loss {metrics['loss']:.4f} perplexity {metrics['perplexity']:.2f} "
        f"accuracy {metrics['accuracy']:.4f} ({metrics['tokens']:,} tokens)"
    )
    if run.early.update(metrics, step):
        ckpt.save_best(run.accelerator, run.model, run.model_config, run.run_dir, run.checkpoint_state())
    return run.early.should_stop(run.accelerator)


def save(run: Run, why: str) -> None:
    """One step checkpoint per optimizer step at most, whatever asked for it."""
    path = ckpt.save_checkpoint(
        run.accelerator, run.model, run.model_config, run.run_dir, run.checkpoint_state(), run.cfg.keep_last
    )
    run.say(f"checkpoint: {path} ({why.split(';')[0]})")


SIGNALLED = "signal"


def pause_reason(run: Run, stop_signal: StopSignal) -> str | None:
    """A signal or a session limit on any process pauses every process at this same step.

    Decided once, for all processes together: a signal that reaches one rank just after this point
    is acted on at the next step by all of them, never by that rank alone.
    """
    cfg = run.cfg
    out_of_time = cfg.max_minutes is not None and time.time() - run.start_time > 60 * cfg.max_minutes
    out_of_steps = cfg.stop_after_steps is not None and run.state.step - run.session_start_step >= cfg.stop_after_steps
    signalled, limited = any_process(run.accelerator, stop_signal.signum is not None, out_of_time or out_of_steps)
    if signalled:
        return SIGNALLED
    if limited:
        return (
            f"paused at step {run.state.step} (session limit); continue with --resume auto --output-dir {run.run_dir}"
        )
    return None


def finish_run(run: Run, reason: str) -> dict:
    """A paused run only says how to continue; a finished one is tested and summarised."""
    from .summary import test_and_summarise

    if reason.startswith("paused"):
        run.say(reason)
        summary = {"stop_reason": reason, "steps": run.state.step}
    else:
        summary = test_and_summarise(run, reason)
    run.log.finish()
    run.accelerator.wait_for_everyone()
    return summary
