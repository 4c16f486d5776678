"""--batch-size auto: the largest micro-batch that fits in a GPU's memory, found by trying
(Accelerate's find_executable_batch_size), with the accumulation raised so that every optimizer
step still sees the rows the recipe asks for (its default micro-batch x --grad-accum)."""

from __future__ import annotations

import dataclasses
import math

import torch

from launch.errors import UserError
from launch.settings.config import TrainConfig, batch_size_on


def check_auto_batch(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse --batch-size auto where there is no GPU memory to fill: before any data work."""
    if cfg.batch_size == "auto" and device.type != "cuda":
        raise UserError(
            f"--batch-size auto finds the largest micro-batch that fits in a GPU's memory; on a {device.type.upper()} "
            f"it does not apply: give --batch-size N (the default here is {batch_size_on(device.type)})"
        )


def resolve_auto_batch(cfg: TrainConfig, accelerator, model) -> TrainConfig:
    """`cfg` with --batch-size auto replaced by what was found (and so saved with the run, which
    then resumes with exactly that batch), every process taking the smallest any of them found."""
    if cfg.batch_size != "auto":
        return cfg
    rows = batch_size_on("cuda") * cfg.grad_accum  # what one optimizer step trains on
    found = largest_batch(model, accelerator, rows)
    batch = int(accelerator.gather(torch.tensor([found], device=accelerator.device)).min())
    accumulation = math.ceil(rows / batch)
    accelerator.gradient_accumulation_steps = accumulation
    accelerator.print(
        f"batch: auto chose {batch} rows x accumulation {accumulation} (up to {rows} rows per "
        "optimizer step, the largest micro-batch whose forward, backward and AdamW step fit)"
    )
    return dataclasses.replace(cfg, batch_size=batch, grad_accum=accumulation)


def largest_batch(model, accelerator, rows: int) -> int:
    from accelerate.utils import find_executable_batch_size

    config, device = model.config, accelerator.device
    model.to(device)

    @find_executable_batch_size(starting_batch_size=rows)
    def probe(batch_size: int) -> int:
        with torch.random.fork_rng(devices=[device]):  # dropout draws here must not shift the run's own
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # its two moments take memory too
            x = torch.randint(0, config.vocab_size, (batch_size, config.context_length), device=device)
            with accelerator.autocast():
                _, loss = model(x, x)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del optimizer
        return batch_size

    return probe()
