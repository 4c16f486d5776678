"""A training run's parts in one object, built whole by `loop.build_run`: every part exists, typed,
from the start; the loop, its components and the last stage share them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gpt_core import GPTConfig
from launch.checkpoints.saving import ModelSpec
from launch.data.prepare import PreparedData
from launch.progress import Progress
from launch.settings.config import TrainConfig
from launch.tracking.trackers import RunLog

from .profiling import StepProfiler
from .state import Checkpointing, EarlyStopping, LossWindow, TokenCount, TrainerState, Validation
from .trial import TrialReport

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader


@dataclass
class Run:
    cfg: TrainConfig
    accelerator: Accelerator
    model_config: GPTConfig
    data: PreparedData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loaders: dict[str, DataLoader]  # train, validation, test: prepared (sharded over the processes)
    batch_size: int  # rows per micro-batch, per process
    run_dir: Path
    total_steps: int  # optimizer steps the run trains in all (epochs, cut by --max-steps / --max-tokens)
    batches_per_epoch: int  # micro-batches of one epoch, per process
    # the components, each acting on its own schedule; those that last across a resume are checkpointed
    state: TrainerState
    early: EarlyStopping
    validation: Validation
    checkpointing: Checkpointing
    trial: TrialReport  # the sweep trial this run is (one that reports nothing outside a sweep)
    tokens: TokenCount
    window: LossWindow
    profiler: StepProfiler
    log: RunLog
    progress: Progress
    session_start_step: int  # where this session started: its --stop-after-steps counts from here
    loss_scale: float  # the fp16 scaler's scale before the next update (1.0 without a scaler)
    # the last update's gradient norm (None when the engine clips without saying: DeepSpeed)
    grad_norm: torch.Tensor | None = field(default_factory=lambda: torch.zeros(()))
    start_time: float = field(default_factory=time.time)

    def say(self, message: str) -> None:
        """Print once, from the main process, above the progress bar."""
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message)

    @property
    def spec(self) -> ModelSpec:
        """What a weights folder records besides the weights."""
        return ModelSpec(self.model_config, self.data.tokenizer)

    def checkpoint_state(self) -> dict:
        """What trainer_state.json holds: each lasting component's state under its own key."""
        self.tokens.settle(self.state)
        return {"trainer": self.state.state_dict(), "early_stopping": self.early.state_dict()}
