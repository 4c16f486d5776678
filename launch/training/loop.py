"""The training loop: one plain Accelerate loop for CPU, one GPU, several GPUs and DeepSpeed.

    run = build_run(cfg)          accelerator, data, model, optimizer; the saved state if resuming
    for each micro-batch:
        micro_step(run, x, y)     forward, backward; every grad_accum batches clip, lr, update
        after_step(run, ...)      after an update, in order: log, validate, checkpoint, pause -> why we stop
    finish_run(run, reason)       test with the best weights, samples, curves, summary.json

Each component says itself when it acts (`should_log`, `should_run`, `should_save`), so
`after_step` reads as the sequence it is. Accelerate does device placement, mixed precision (fp16
with loss scaling, bf16, fp32 on CPU), gradient accumulation, data sharding and checkpoint state.
We keep the schedule ourselves, counted in optimizer steps that really happened: a prepared
scheduler would step once per process per update under several processes, and not at all for a
skipped fp16 step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from gpt_core import GPT
from launch.checkpoints.folders import checkpoint_components
from launch.checkpoints.restoring import load_training_state, read_checkpoint, saved_process_count
from launch.checkpoints.saving import remove_stale_temporaries, save_best, save_checkpoint, store_weights_once
from launch.checkpoints.weights import check_initial_weights, load_initial_weights
from launch.data.batching import make_loaders
from launch.data.prepare import prepare_data
from launch.errors import UserError
from launch.progress import progress
from launch.runtime.accelerator import check_compile, collective_errors, make_accelerator
from launch.runtime.processes import StopSignal, TrainingInterrupted, any_process, rank_print
from launch.settings.config import TrainConfig, batch_size_on
from launch.tracking.trackers import RunLog

from .autobatch import check_auto_batch, resolve_auto_batch
from .evaluation import evaluate, metrics_text, perplexity
from .finish import test_and_summarise
from .optim import build_optimizer, check_optimizer, ignored_settings, lr_at
from .profiling import StepProfiler
from .resume import for_process_count, starting_point
from .run import Run
from .run_folder import check_run_dir
from .state import (
    COMPLETED,
    Checkpointing,
    EarlyStopping,
    LossWindow,
    StopKind,
    StopReason,
    TokenCount,
    TrainerState,
    Validation,
)
from .trial import TrialReport


# ---------------------------------------------------------------------------------------------
# Building a run: each part made in the order it needs the others, then the Run, whole
# ---------------------------------------------------------------------------------------------
def build_run(cfg: TrainConfig, resume_from: Path | None) -> Run:
    check_run_dir(Path(cfg.output_dir))
    accelerator = _accelerator(cfg)
    model_config = cfg.model_config()
    # data: the first process to take the cache's lock tokenizes, the others say they wait, then read it
    data = prepare_data(cfg.data, cfg.seed, log=accelerator.print, every_rank=rank_print)
    model = _model(cfg, model_config, accelerator, resume_from)
    cfg = resolve_auto_batch(cfg, accelerator, model)
    batch_size = batch_size_on(accelerator.device.type, cfg.batch_size)
    pin, context = accelerator.device.type == "cuda", model_config.context_length
    loaders = make_loaders(data.splits, context, cfg.layout, batch_size, cfg.seed, pin, accelerator.print)
    if cfg.compile:
        # In place: the module keeps its own parameter names (a torch.compile wrapper would prefix
        # each with `_orig_mod.`), so checkpoints, DeepSpeed and resumes see the same model either way.
        model.compile()
    optimizer = build_optimizer(model, cfg, accelerator.device)
    store_weights_once(accelerator)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared, strict=True))
    batches_per_epoch, total_steps = _plan_length(cfg, accelerator, loaders["train"], batch_size, context)
    _open_run_folder(Path(cfg.output_dir), accelerator)
    state, early = TrainerState(), EarlyStopping(cfg.patience)
    if resume_from is not None:
        _restore(resume_from, model_config, data, model, state, early, accelerator, cfg.seed)
        accelerator.print(
            f"resume: {resume_from} (step {state.step}, epoch {state.epoch + 1}, "
            f"batch {state.batch_in_epoch} of {batches_per_epoch})"
        )
    state.mixed_precision = accelerator.mixed_precision
    log = _open_log(cfg, accelerator, data, resumed_step=state.step if resume_from is not None else None)
    profiler = StepProfiler(cfg.profile_steps, Path(cfg.output_dir), state.step)
    return Run(
        cfg,
        accelerator,
        model_config,
        data,
        model,
        optimizer,
        loaders,
        batch_size,
        Path(cfg.output_dir),
        total_steps,
        batches_per_epoch,
        state=state,
        early=early,
        validation=Validation(cfg.eval_every),
        checkpointing=Checkpointing(cfg.save_every),
        trial=TrialReport.from_environment(),
        tokens=TokenCount(accelerator, cfg.layout == "packed"),
        window=LossWindow(accelerator.device, state.tokens, cfg.log_every),
        profiler=profiler,
        log=log,
        progress=progress(total_steps, "train", "step", state.step, enabled=accelerator.is_local_main_process),
        session_start_step=state.step,
        loss_scale=accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0,  # restored too
    )


def _accelerator(cfg: TrainConfig):
    """The Accelerator for these settings, after refusing what its engine cannot run."""
    from accelerate.utils import DataLoaderConfiguration, set_seed

    accelerator = make_accelerator(
        cfg.collective_timeout,
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=cfg.output_dir,
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )
    set_seed(cfg.seed)
    check_optimizer(cfg, accelerator)
    check_compile(accelerator, cfg.compile)
    for note in ignored_settings(cfg):
        accelerator.print(f"note: {note}")
    check_auto_batch(cfg, accelerator.device)
    return accelerator


def _model(cfg: TrainConfig, model_config, accelerator, resume_from: Path | None) -> GPT:
    """The model: new, or --init-from's weights when the run starts (a resume loads its own later)."""
    model = GPT(model_config)
    source = f"from {cfg.init_from}" if cfg.init_from and not cfg.preset else f"preset {cfg.preset or 'paper'}"
    accelerator.print(f"model: {source}, {model.num_params():,} parameters, norm={model_config.norm}")
    if cfg.init_from and resume_from is None:
        folder = load_initial_weights(model, cfg.init_from, cfg.data.tokenizer, cfg.architecture_flags())
        accelerator.print(f"init: weights from {folder}; the optimizer, schedule and step start fresh")
    model.activation_checkpointing = cfg.activation_checkpointing
    return model


def _open_run_folder(run_dir: Path, accelerator) -> None:
    """Create the folder and clear what an interrupted save left there."""
    if accelerator.is_main_process:
        check_run_dir(run_dir, create=True)
        stale = remove_stale_temporaries(run_dir)
        if stale:
            accelerator.print(
                f"checkpoint: removed {len(stale)} unfinished temporary folder(s) of an interrupted save: "
                f"{', '.join(stale)}"
            )


def _plan_length(cfg: TrainConfig, acc, train_loader, batch_size: int, context: int) -> tuple[int, int]:
    """(micro-batches per epoch per process, optimizer steps in all): epochs, cut by --max-steps / --max-tokens."""
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise UserError(
            f"the train split has {len(train_loader.dataset)} rows, fewer than one batch per process "
            f"({batch_size} x {acc.num_processes}); lower --batch-size or give --data more stories"
        )
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    tokens_per_step = batch_size * context * cfg.grad_accum * acc.num_processes
    total_steps = min(
        cfg.epochs * steps_per_epoch,
        cfg.max_steps or math.inf,
        math.ceil(cfg.max_tokens / tokens_per_step) if cfg.max_tokens else math.inf,
    )
    acc.print(
        f"train: {acc.num_processes} process(es) on {acc.device}, mixed precision {acc.mixed_precision}, batch "
        f"{batch_size} x accumulation {cfg.grad_accum} x {acc.num_processes} = {tokens_per_step:,} tokens per "
        f"optimizer step, {total_steps:,} steps ({steps_per_epoch:,} per epoch)"
    )
    return batches_per_epoch, total_steps


def _restore(path: Path, model_config, data, model, state: TrainerState, early: EarlyStopping, accelerator, seed):
    """The checkpoint's weights, optimizer, scaler and RNG states, then each lasting component's own
    state; under another number of processes, the epoch's position counted in this launch's batches
    and fresh random streams."""
    from accelerate.utils import set_seed

    saved = read_checkpoint(path, model_config, data.tokenizer)  # it fits this model and tokenizer
    load_training_state(accelerator, model, path)
    components = checkpoint_components(saved)
    state.load_state_dict(components["trainer"])
    early.load_state_dict(components["early_stopping"])
    saved_processes, processes = saved_process_count(path), accelerator.num_processes
    if saved_processes != processes:
        state.batch_in_epoch = state.batch_in_epoch * saved_processes // processes
        accelerator.step = state.batch_in_epoch  # where gradient accumulation stands in the epoch
        set_seed(seed + state.step, device_specific=True)


def _open_log(cfg: TrainConfig, accelerator, data, resumed_step: int | None) -> RunLog:
    """The run's logs (metrics.jsonl and the tracker), and its settings and tokenizer saved beside them."""
    run_dir = Path(cfg.output_dir)
    name = cfg.run_name or run_dir.name
    log = RunLog(accelerator, run_dir, cfg.tracker, cfg.project, name, cfg.to_dict(), resumed_step)
    if accelerator.is_main_process:
        cfg.save(run_dir)
        data.tokenizer.save(run_dir)  # the run's own copy, should the tokenizer file move
    return log


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    cfg.check_prompts()  # with the other options, before any data work: sampling comes only at the end
    if cfg.init_from and not cfg.resume:  # from its config.json and tokenizer.json alone
        check_initial_weights(cfg.init_from, cfg.model_config(), cfg.data.tokenizer, cfg.architecture_flags())
    start = starting_point(cfg)
    if start.finished and not start.end_only:
        return {"stop_reason": f"already finished: {start.finished}", "steps": None}
    if start.checkpoint is not None:
        cfg = for_process_count(cfg, start.checkpoint)
    with collective_errors(cfg.collective_timeout):
        run = build_run(cfg, start.checkpoint)
        if start.end_only:
            return finish_run(run, run.state.stop_reason())
        if cfg.init_from and start.checkpoint is None:  # where fine-tuning starts from, before any step
            validate(run, epoch=0, epoch_end=False)
        run.profiler.check_length(run.total_steps, run.say)
        run.window.restart(run.state.tokens)  # tokens/s counts training from here
        reason = None
        with StopSignal() as stop_signal, run.progress:
            run.model.train()
            while reason is None and run.state.epoch < cfg.epochs:
                for x, y in epoch_batches(run):
                    updated = micro_step(run, x, y)
                    epoch_end = run.state.count_batch(run.batches_per_epoch)
                    if updated and (reason := after_step(run, stop_signal, epoch_end)):
                        break
        return finish_run(run, reason or COMPLETED)


def epoch_batches(run: Run):
    """The micro-batches of the epoch in progress, from where a resumed run left off."""
    loader = run.loaders["train"]
    loader.set_epoch(run.state.epoch)
    skip = run.state.batch_in_epoch
    return run.accelerator.skip_first_batches(loader, skip) if skip else loader


def micro_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Forward and backward one micro-batch; at every grad_accum-th (and an epoch's last) also clip,
    set the lr and update. True when an optimizer update really happened."""
    acc, state, cfg = run.accelerator, run.state, run.cfg
    with acc.accumulate(run.model):
        if acc.sync_gradients:  # before backward: under DeepSpeed, backward itself takes the step
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(state.step, cfg, run.total_steps) * group.get("lr_scale", 1.0)
        _, loss = run.model(x, y)
        acc.backward(loss)
        if acc.sync_gradients:
            run.grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.window.add(loss)
    run.tokens.add(y)
    if not acc.sync_gradients:
        return False
    applied = not _update_skipped(run)
    run.tokens.end_update(applied)
    if applied:
        state.step += 1
    else:  # not a step: the schedule stays where it is, and the tokens are not counted
        state.skipped_updates += 1
    return applied


def _update_skipped(run: Run) -> bool:
    """Whether the fp16 loss scaler skipped the update just taken: its scale drops after every skip,
    and only then (Accelerate's own flag misses the skips of a fused optimizer's kernel). Read once
    per update, once it is queued: the one host sync an fp16 update costs."""
    if run.accelerator.scaler is None:
        return run.accelerator.optimizer_step_was_skipped  # DeepSpeed's own loss scaler
    before, run.loss_scale = run.loss_scale, run.accelerator.scaler.get_scale()
    return run.loss_scale < before


def after_step(run: Run, stop_signal: StopSignal, epoch_end: bool) -> StopReason | None:
    """Everything that happens between optimizer updates, in order. Returns why the run stops here:
    finished (completed, early stopping) or paused (a session limit); None to go on. A signal saves,
    then raises TrainingInterrupted."""
    cfg, state = run.cfg, run.state
    epoch = state.epoch - 1 if epoch_end else state.epoch  # the epoch this update belongs to
    run.progress.update(1)
    if run.profiler.after_update(state.step, run.say):
        run.tokens.settle(state)
        run.window.restart(state.tokens)
    if run.window.should_log(state.step):
        log_training(run, epoch)
    last_step = state.step >= run.total_steps or state.epoch >= cfg.epochs
    finished = COMPLETED if last_step else None
    if run.validation.should_run(state.step, epoch_end, last_step):
        with run.window.paused():
            finished = validate(run, epoch, epoch_end) or finished
    paused = pause_reason(run, stop_signal)
    state.finish(None if paused else finished)  # paused at the last step: the resumed session finishes
    if run.checkpointing.should_save(state.step, epoch_end, stopping=bool(finished or paused)):
        why = paused or finished or ("end of epoch" if epoch_end else "every --save-every steps")
        with run.window.paused():
            save(run, str(why))
    if paused and paused.kind is StopKind.SIGNAL:
        raise TrainingInterrupted(
            f"{paused}: saved step {state.step}; continue with --resume auto --output-dir {run.run_dir}",
            stop_signal.exit_code,
        )
    return paused or finished


def log_training(run: Run, epoch: int) -> None:
    state = run.state
    run.tokens.settle(state)
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
            "epoch": epoch,
            "loss": mean_loss,
            "perplexity": perplexity(mean_loss),
            "lr": run.optimizer.param_groups[0]["lr"],
            "grad_norm": None if run.grad_norm is None else float(run.grad_norm),  # None: DeepSpeed clips itself
            "tokens": state.tokens,
            "tokens_per_s": tokens_per_s,
            "skipped_updates": state.skipped_updates,
        }
    )
    run.progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")


def validate(run: Run, epoch: int, epoch_end: bool) -> StopReason | None:
    """Evaluate on the validation split, keep the best weights; why to stop here (early stopping, a
    sweep's pruner), or None."""
    metrics = evaluate(run.model, run.loaders["validation"], run.accelerator, run.data.tokenizer, run.cfg.eval_batches)
    step = run.state.step
    run.log.log({"kind": "eval", "step": step, "epoch": epoch, "epoch_end": epoch_end, **metrics})
    run.say(f"eval: step {step} {metrics_text(metrics)}")
    if run.early.update(metrics, step):
        save_best(run.accelerator, run.model, run.spec, run.run_dir, run.checkpoint_state())
    if run.early.should_stop(run.accelerator):
        return run.early.reason()
    return run.trial.prune(metrics, step, run.accelerator)


def save(run: Run, why: str) -> None:
    acc = run.accelerator
    path = save_checkpoint(acc, run.model, run.spec, run.run_dir, run.checkpoint_state(), run.cfg.keep_last)
    run.say(f"checkpoint: {path} ({why.split(';')[0]})")


def pause_reason(run: Run, stop_signal: StopSignal) -> StopReason | None:
    """A signal or a session limit on any process pauses every process at this same step.

    Decided once, for all processes together: a signal that reaches one rank just after this point
    is acted on at the next step by all of them, never by that rank alone.
    """
    cfg = run.cfg
    out_of_time = cfg.max_minutes is not None and time.time() - run.start_time > 60 * cfg.max_minutes
    out_of_steps = cfg.stop_after_steps is not None and run.state.step - run.session_start_step >= cfg.stop_after_steps
    signalled, limited = any_process(run.accelerator, stop_signal.signum is not None, out_of_time or out_of_steps)
    if signalled:
        what = f"{stop_signal.name} received" if stop_signal.signum else "another process was signalled"
        return StopReason(StopKind.SIGNAL, what)
    if limited:
        return StopReason(
            StopKind.SESSION_LIMIT,
            f"paused at step {run.state.step} (session limit); continue with --resume auto --output-dir {run.run_dir}",
        )
    return None


def finish_run(run: Run, reason: StopReason) -> dict:
    """A paused run only says how to continue; a finished one is tested and summarised."""
    run.tokens.settle(run.state)
    run.profiler.close()
    if reason.finished:
        summary = test_and_summarise(run, str(reason))
    else:
        run.say(str(reason))
        summary = {"stop_reason": str(reason), "steps": run.state.step}
    run.log.finish()
    run.accelerator.wait_for_everyone()
    return summary
