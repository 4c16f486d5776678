"""Precision: what a CPU's bf16 hardware is worth (its flags, and a measurement), the advice a run
prints about it, and the precision `evaluate` and `generate` run in."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from launch.errors import UserError

from .devices import device_name, measure_matmul_peak

CPU_BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16", "bf16": "Arm BF16"}


def cpu_bf16_features() -> list[str]:
    """This CPU's bf16 matrix hardware (Intel AMX, AVX-512 BF16, Arm's BF16 extension), read from the
    kernel's CPU flags. Without any, bf16 still works, emulated, and slower than fp32. Unknown (not
    Linux): none, so nothing is assumed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return [name for flag, name in CPU_BF16_FLAGS.items() if flag in flags]


@functools.cache
def cpu_bf16_speedup() -> float:
    """bf16 matrix products' speed over fp32's on this CPU, measured (512-square, best of 5 each:
    ~0.1 s). The flags say what hardware there is; only a measurement says what it is worth."""
    cpu = torch.device("cpu")
    return measure_matmul_peak(cpu, torch.bfloat16, (512,)) / measure_matmul_peak(cpu, torch.float32, (512,))


def cpu_bf16_line(features: list[str], speedup: float) -> str:
    """The line `info` and `bench` print of this CPU's bf16 hardware and what it measured."""
    return (
        f"bf16 matrix hardware: {', '.join(features) or 'none (no AMX, AVX-512 BF16)'}; "
        f"bf16 matmul {speedup:.2f}x fp32 (measured)"
    )


# A step is more than its matrix products: with them 6.7x faster in bf16, a `paper` step was 1.44x
# (measured on an Intel Xeon with AMX). Below 2x the gain would be lost in the rest, so nothing is advised.
BF16_ADVICE_FACTOR = 2.0


def cpu_precision_advice(precision: str) -> str | None:
    """One line when this CPU would train faster in the other precision ("no" or "bf16"), with the
    measured factor of its bf16 matrix products over fp32's; None when it would not."""
    if precision not in ("no", "bf16"):
        return None
    factor, features = cpu_bf16_speedup(), cpu_bf16_features()
    hardware = ", ".join(features) if features else "no AMX or AVX-512 BF16"
    if precision == "no" and factor >= BF16_ADVICE_FACTOR:
        return (
            f"note: this CPU ({hardware}) multiplies bf16 matrices {factor:.1f}x faster than fp32 (measured): "
            "it would train faster with --mixed-precision bf16"
        )
    if precision == "bf16" and factor < 1.0:
        return (
            f"note: this CPU ({hardware}) multiplies bf16 matrices at {factor:.2f}x fp32's speed (measured): "
            "bf16 trains slower here than --mixed-precision no"
        )
    return None


def supports_precision(device: torch.device, precision: str) -> bool:
    """Whether `precision` ("no", "bf16", "fp16") runs at its speed on `device`: fp16 needs a GPU;
    bf16 a GPU that has it, or a CPU with bf16 matrix hardware."""
    if precision == "no":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    return device.type == "cpu" and precision == "bf16" and bool(cpu_bf16_features())


PRECISION_NAMES = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def choose_precision(device: torch.device, asked: str | None, trained: str | None) -> tuple[str, str]:
    """The precision `evaluate` and `generate` run in, and why: `asked` (--mixed-precision) if given,
    else what the weights were trained in (`trained`) where this device supports it, else fp32."""
    if asked is not None:
        if device.type == "cpu" and asked == "fp16":
            raise UserError(
                "--mixed-precision fp16 needs a GPU (CPUs have no fp16 matrix kernels worth using); "
                "use --mixed-precision bf16 or no"
            )
        if device.type == "cuda" and asked == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--mixed-precision bf16: {device_name(device)} has no bf16; use fp16 or no")
        return asked, f"{PRECISION_NAMES[asked]}, as --mixed-precision asks"
    trained = trained or "no"
    if supports_precision(device, trained):
        return trained, f"{PRECISION_NAMES[trained]}, as the weights were trained"
    return "no", (
        f"fp32: the weights were trained in {trained}, which {device_name(device)} does not run at speed; "
        f"--mixed-precision {trained} asks for it anyway"
    )
