"""The loop's small state objects. Each owns one concern and, where it lasts across a resume,
saves and restores itself (`state_dict` / `load_state_dict`) under its own key of every checkpoint's
trainer_state.json (`Run.checkpoint_state`)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import time
from dataclasses import dataclass

import torch

from gpt_core import IGNORE_INDEX


@dataclass
class TrainerState:
    """Where the run stands."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # the epoch in progress, from 0
    batch_in_epoch: int = 0  # micro-batches of that epoch already trained
    tokens: int = 0  # real target tokens trained on, all processes together
    skipped_updates: int = 0  # updates the fp16 loss scaler skipped (an inf/NaN gradient): not steps
    mixed_precision: str = "no"  # what the session that saved this trained in (evaluate and generate follow it)
    finished: str | None = None  # why the run ended, once it has
    stop_kind: str | None = None  # and which kind of ending that was (a StopKind value)

    def count_batch(self, batches_per_epoch: int) -> bool:
        """One more micro-batch trained; True when it ended the epoch, which then rolls over here,
        the one place it does, whether or not that batch's update was applied."""
        self.batch_in_epoch += 1
        if self.batch_in_epoch < batches_per_epoch:
            return False
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return True

    def finish(self, reason: StopReason | None) -> None:
        self.finished, self.stop_kind = (str(reason), reason.kind.value) if reason else (None, None)

    def stop_reason(self) -> StopReason:
        """How the run ended, from a checkpoint saved at its end (older ones name no kind: completed)."""
        return StopReason(StopKind(self.stop_kind or StopKind.COMPLETED.value), self.finished)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, saved: dict) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, saved.get(f.name, f.default))


class StopKind(enum.Enum):
    COMPLETED = "completed"
    EARLY_STOPPING = "early stopping"
    SESSION_LIMIT = "session limit"
    SIGNAL = "signal"
    PRUNED = "pruned"  # by a sweep's pruner, at a validation


@dataclass(frozen=True)
class StopReason:
    """Why the loop stops: finished (completed, early stopping, pruned by a sweep: test and
    summarise) or paused (a session limit, a signal: a checkpoint, then resume)."""

    kind: StopKind
    message: str

    @property
    def finished(self) -> bool:
        return self.kind in (StopKind.COMPLETED, StopKind.EARLY_STOPPING, StopKind.PRUNED)

    def __str__(self) -> str:
        return self.message


COMPLETED = StopReason(StopKind.COMPLETED, "completed")


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

    def reason(self) -> StopReason:
        return StopReason(
            StopKind.EARLY_STOPPING, f"early stopping: no validation improvement in {self.patience} evaluations"
        )

    def state_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "patience"}

    def load_state_dict(self, saved: dict) -> None:
        for name in self.state_dict():
            setattr(self, name, saved.get(name))
        self.evals_without_improvement = self.evals_without_improvement or 0


@dataclass
class Validation:
    """Validate at each epoch's end, at the last step, and every `every` steps if given."""

    every: int | None

    def should_run(self, step: int, epoch_end: bool, last_step: bool) -> bool:
        return epoch_end or last_step or bool(self.every and step % self.every == 0)


@dataclass
class Checkpointing:
    """Save at each epoch's end, whenever the run stops, and every `every` steps if given; at most
    once per optimizer step, whatever asked for it."""

    every: int | None

    def should_save(self, step: int, epoch_end: bool, stopping: bool) -> bool:
        return stopping or epoch_end or bool(self.every and step % self.every == 0)


class TokenCount:
    """Real target tokens of the updates applied, all processes together. Packed rows are all real,
    so the count is known on the host; padded rows are counted on the device and all-reduced only
    when read, so no micro-batch waits for the host or for the other processes."""

    def __init__(self, accelerator, packed: bool):
        self.accelerator, self.packed = accelerator, packed
        self.pending = torch.zeros((), dtype=torch.int64, device=accelerator.device)  # this update's
        self.applied = torch.zeros((), dtype=torch.int64, device=accelerator.device)  # since the last read
        self.pending_host = self.applied_host = 0  # the same two counts on the host, for packed rows

    def add(self, y: torch.Tensor) -> None:
        if self.packed:
            self.pending_host += y.numel() * self.accelerator.num_processes
        else:
            self.pending += (y != IGNORE_INDEX).sum()

    def end_update(self, applied: bool) -> None:
        """The update these micro-batches made was applied (or skipped, an fp16 overflow)."""
        if applied:
            self.applied += self.pending
            self.applied_host += self.pending_host
        self.pending.zero_()
        self.pending_host = 0

    def settle(self, state: TrainerState) -> None:
        """Add the tokens since the last read to `state.tokens` (one all-reduce, padded rows only)."""
        state.tokens += self.applied_host
        self.applied_host = 0
        if not self.packed:
            state.tokens += int(self.accelerator.reduce(self.applied.clone(), reduction="sum"))
            self.applied.zero_()


class LossWindow:
    """Training losses and tokens since the last log. Losses stay on the device until read, so no
    micro-batch waits for the host. Time spent `paused()` (validation, checkpoints) is left out of
    tokens/s, which measures training alone."""

    def __init__(self, device: torch.device, tokens: int, log_every: int = 1):
        self.total, self.count, self.log_every = torch.zeros((), device=device), 0, log_every
        self.start, self.start_tokens = time.perf_counter(), tokens

    def should_log(self, step: int) -> bool:
        return step % self.log_every == 0

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

    def restart(self, tokens: int) -> None:
        """Start the time and token count again from here (e.g. after profiled steps)."""
        self.start, self.start_tokens = time.perf_counter(), tokens

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - began
