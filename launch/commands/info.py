"""`gpt-launch info`: a checkpoint's or preset's shape, size and cost, and an estimate of one
epoch's time on this device, measured as `gpt-launch bench` measures our training."""

from __future__ import annotations

import json

from gpt_core import get_preset, load_pretrained
from launch.bench.measure import measure_our_training
from launch.checkpoints.folders import resolve_weights
from launch.runtime.devices import resolve_device
from launch.runtime.precision import cpu_bf16_features, cpu_bf16_line, cpu_bf16_speedup, cpu_precision_advice
from launch.settings.commands import InfoSettings
from launch.settings.config import batch_size_on


def describe(checkpoint: str | None, s: InfoSettings) -> list[str]:
    dev, preset, steps, epoch_tokens = resolve_device(s.device), s.preset, s.measure_steps, s.epoch_tokens
    if preset:
        config, source = get_preset(preset), f"preset {preset}"
    else:
        folder = resolve_weights(checkpoint)
        config, source = load_pretrained(folder).config, str(folder)
    batch = batch_size_on(dev.type, s.batch_size)
    tokens_per_s = measure_our_training(config, dev, batch, steps=steps)
    flops = config.flops_per_token()
    lines = [
        f"source: {source}",
        json.dumps(config.to_dict(), indent=2),
        f"parameters: {config.num_params():,} (tied embedding {config.vocab_size * config.d_model:,})",
        f"training FLOPs per token: {flops:,} ({flops / 1e6:.0f} MFLOP)",
        f"measured on {dev}: {tokens_per_s:,.0f} tokens/s (batch {batch} x {config.context_length} x accumulation 2, "
        f"fp32, median of {steps} optimizer steps after 2 untimed)",
        f"estimated time per epoch of {epoch_tokens:,} tokens: {epoch_tokens / tokens_per_s / 3600:.2f} h",
    ]
    if dev.type == "cpu":
        lines.append(cpu_bf16_line(cpu_bf16_features(), cpu_bf16_speedup()))
        lines += [advice] if (advice := cpu_precision_advice("no")) else []
    return lines
