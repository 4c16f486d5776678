"""A training run's parts in one object: what the loop, its components and the last stage share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt_core import GPTConfig
from launch.checkpoints.saving import ModelSpec
from launch.data.prepare import PreparedData
from launch.settings.config import TrainConfig
from launch.tracking.trackers import RunLog

from .profiling import StepProfiler
from .state import Checkpointing, EarlyStopping, LossWindow, TokenCount, TrainerState, Validation
from .trial import TrialReport


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
    trial: TrialReport | None = None  # the sweep trial this run is, if any
    validation: Validation | None = None
    checkpointing: Checkpointing | None = None
    tokens: TokenCount | None = None
    log: RunLog | None = None
    window: LossWindow | None = None
    profiler: StepProfiler | None = None
    progress: object = None
    grad_norm: torch.Tensor | None = None
    loss_scale: float | None = None  # the fp16 scaler's scale before the next update
    session_start_step: int = 0
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
        self.tokens.settle(self.state)
        return self.state.state_dict() | self.early.state_dict()
