"""The optimizer and its learning-rate schedule, counted in optimizer steps that really happened."""

from __future__ import annotations

import math

import torch

from launch.settings.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The learning rate of update `step` (from 0): a linear warmup over `warmup_steps`, then
    cfg.schedule from cfg.lr down to cfg.min_lr at total_steps (the paper: cosine to 0).

    wsd (warmup-stable-decay) holds cfg.lr until the last `decay_fraction` of the steps, then decays
    linearly: a run can be extended (a larger --max-steps on --resume) before its decay begins,
    without redoing any of it.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps), 1.0)
    span = cfg.lr - cfg.min_lr
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "linear":
        return cfg.min_lr + span * (1.0 - progress)
    if cfg.schedule == "wsd":
        stable = 1.0 - cfg.decay_fraction
        return cfg.lr if progress < stable else cfg.min_lr + span * (1.0 - progress) / cfg.decay_fraction
    return cfg.min_lr + span * 0.5 * (1.0 + math.cos(math.pi * progress))


def unused_schedule_settings(cfg: TrainConfig) -> list[str]:
    """Schedule settings given a value that the chosen schedule ignores: a note each, at the start."""
    if cfg.schedule == "wsd" or cfg.decay_fraction == TrainConfig.decay_fraction:
        return []
    return [f"--decay-fraction {cfg.decay_fraction} applies to --schedule wsd only: ignored with {cfg.schedule}"]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (LayerNorm gains and biases are not decayed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass (CPU and CUDA alike).
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)
