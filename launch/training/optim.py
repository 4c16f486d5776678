"""The optimizer and its learning-rate schedule, counted in optimizer steps that really happened."""

from __future__ import annotations

import math

import torch

from launch.errors import UserError
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


def ignored_settings(cfg: TrainConfig) -> list[str]:
    """Settings given a value that the chosen schedule or optimizer ignores: a note each, at the start."""
    notes = []
    if cfg.schedule != "wsd" and cfg.decay_fraction != TrainConfig.decay_fraction:
        notes.append(
            f"--decay-fraction {cfg.decay_fraction} applies to --schedule wsd only: ignored with {cfg.schedule}"
        )
    if cfg.optimizer != "muon" and cfg.muon_lr != TrainConfig.muon_lr:
        notes.append(f"--muon-lr {cfg.muon_lr} applies to --optimizer muon only: ignored with {cfg.optimizer}")
    return notes


def check_optimizer(cfg: TrainConfig, accelerator) -> None:
    """Muon orthogonalises whole matrices: a sharding engine hands it shards (FSDP) or replaces the
    optimizer with its own (DeepSpeed, which has no Muon)."""
    from accelerate.utils import DistributedType

    engines = {DistributedType.DEEPSPEED: "DeepSpeed has no Muon", DistributedType.FSDP: "FSDP shards its matrices"}
    if cfg.optimizer == "muon" and accelerator.distributed_type in engines:
        raise UserError(
            f"--optimizer muon cannot run here: {engines[accelerator.distributed_type]}; "
            "use --optimizer adamw, or launch with DDP (launch/configs/multi_gpu.yaml)"
        )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only (LayerNorm gains and biases are not decayed); or, with
    --optimizer muon, Muon for the matrices inside the blocks and AdamW for the rest.

    Each parameter group carries `lr_scale`: the schedule's lr (lr_at, from --lr) times it is the
    group's lr, so Muon's groups follow the same warmup and decay from --muon-lr.
    """
    # The fused kernel updates all parameters in one pass (CPU and CUDA alike).
    fused = device.type in ("cpu", "cuda")
    muon_owned = muon_parameters(model) if cfg.optimizer == "muon" else []
    owned = {id(p) for p in muon_owned}
    rest = [p for p in model.parameters() if id(p) not in owned]
    decay, no_decay = [p for p in rest if p.dim() >= 2], [p for p in rest if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)
    if not muon_owned:
        return adamw
    muon = torch.optim.Muon(
        [{"params": muon_owned, "lr_scale": cfg.muon_lr / cfg.lr}], lr=cfg.muon_lr, weight_decay=cfg.weight_decay
    )
    return MuonWithAdamW(muon, adamw)


def muon_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The matrices Muon orthogonalises: every 2-D weight inside the blocks (attention's fused q/k/v
    and output, the feed-forward's). The embedding, the output layer, norms and biases stay with
    AdamW, as in Keller Jordan's Muon and torchtitan: they are lookups or vectors, not transforms."""
    return [p for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2]


class MuonWithAdamW(torch.optim.Optimizer):
    """Two optimizers stepping as one, for Accelerate, the schedule and checkpoints: its param_groups
    are theirs (the same dicts, AdamW's first, so an lr set here is the one each uses), and its
    state_dict holds both, saved and resumed as one optimizer's is."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw
        super().__init__(adamw.param_groups + muon.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.adamw.step(closure)
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.adamw.load_state_dict(state_dict["adamw"])
        self.muon.load_state_dict(state_dict["muon"])
