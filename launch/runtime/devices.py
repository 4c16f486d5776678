"""The devices a run can use: which one `auto` means, whether the machine has it, its name, and its
measured matrix-product peak."""

from __future__ import annotations

import os
import platform
import time

import torch

from launch.errors import UserError


def has_accelerator_device() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


def resolve_device(choice: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one (and Accelerate is not told to use the CPU), else the CPU;
    anything else as torch spells it."""
    if choice == "auto":
        forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
        return torch.device("cuda" if torch.cuda.is_available() and not forced_cpu else "cpu")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, sizes=None, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` square matmuls at each size: the best this device really
    reaches. Taking the best makes MFU conservative (a slow moment lowers MFU, never raises it)."""
    # A CPU reaches its peak by 2048 (4096 measured the same here, in 8x the time); a GPU needs more work.
    sizes = sizes or ((4096, 8192) if device.type == "cuda" else (1024, 2048))
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b  # warm-up
        synchronize(device)
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def available_device(choice: str, flag: str = "--device") -> torch.device:
    """`choice` (auto, cpu, cuda, cuda:N) as a device this machine has; else one line saying what it has."""
    try:
        device = resolve_device(choice)
    except RuntimeError:
        raise UserError(f"{flag} {choice} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise UserError(f"{flag} {choice}: this machine has {have}; use {flag} cpu, or auto")
    if device.type not in ("cpu", "cuda") and not has_accelerator_device():
        raise UserError(f"{flag} {choice}: this machine has no {device.type} device; use {flag} cpu, or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
