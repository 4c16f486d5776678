"""`gpt-launch bench`: what this machine gets out of our training, evaluation and generation, as
ratios against references measured in the same run (see launch/bench/measure.py for each figure)."""

from __future__ import annotations

import statistics

import torch

from gpt_core import get_preset
from launch.runtime.devices import device_name, measure_matmul_peak, resolve_device
from launch.runtime.precision import cpu_bf16_features, cpu_bf16_line, cpu_bf16_speedup, cpu_precision_advice
from launch.settings.commands import BenchSettings
from launch.settings.config import SMOKE_DATA, batch_size_on

from .measure import (
    DTYPES,
    EVALUATIONS,
    default_implementations,
    interleaved,
    measure_data_preparation,
    measure_generation,
    resolve,
    story_files,
)


def run_bench(settings: BenchSettings, implementations: dict[str, str] | None = None, progress=print) -> dict:
    """Every measurement; `implementations` (kind -> "module:ATTRIBUTE") are trained side by side, the
    first being ours (default: `default_implementations()`)."""
    s, implementations = settings, implementations or default_implementations()
    dev = resolve_device(s.device)
    precision = s.precision or ("fp32" if dev.type == "cpu" else "bf16")
    config, source = get_preset(s.preset), s.data or str(SMOKE_DATA)
    peak_dtype = DTYPES[precision] or torch.float32
    progress(f"bench: measuring the {precision} matmul peak on {dev}")
    peak = measure_matmul_peak(dev, peak_dtype)
    batch = batch_size_on(dev.type, s.batch_size)
    result = {
        "device": device_name(dev),
        "precision": precision,
        "preset": s.preset,
        "batch_size": batch,
        "grad_accum": s.grad_accum,
        "context": config.context_length,
        "steps": s.steps,
        "warmup": s.warmup,
        "rounds": s.rounds,
        "data": source,
        "torch_threads": torch.get_num_threads(),
        "flops_per_token": config.flops_per_token(),
        "compile": s.compile,
    }
    if dev.type == "cpu":
        result["cpu_bf16"] = cpu_bf16_figures(precision)
    spec = {
        "preset": s.preset,
        "batch_size": batch,
        "grad_accum": s.grad_accum,
        "steps": s.steps,
        "device": str(dev),
        "precision": precision,
        "data": story_files(source, s.cache_dir),
        "compile": s.compile,
        "warmup": s.warmup,
    }
    kinds = {kind: (resolve(ref).description, {"implementation": ref}) for kind, ref in implementations.items()}
    training = interleaved(spec, kinds, s.rounds, "training", progress)
    ours = training[next(iter(implementations))]
    peak = max(peak, measure_matmul_peak(dev, peak_dtype))  # again after the runs: the higher is MFU's denominator
    for row in training.values():
        row["mfu"] = row["tokens_per_s"] * result["flops_per_token"] / peak
        if row is not ours:
            row["ours_speedup"] = ours["tokens_per_s"] / row["tokens_per_s"]
            row["memory_vs_ours"] = row["peak_memory_mb"] / ours["peak_memory_mb"]
    evaluation = interleaved(spec, {k: (v, {}) for k, v in EVALUATIONS.items()}, s.rounds, "evaluating", progress)
    for row in evaluation.values():
        row["vs_training"] = row["tokens_per_s"] / ours["tokens_per_s"]
        row["memory_vs_training"] = row["peak_memory_mb"] / ours["peak_memory_mb"]
    result.update(matmul_peak_tflops=peak / 1e12, training=training, evaluation=evaluation)
    result["generation"] = _generation(s, dev, progress)
    progress("bench: preparing the stories from scratch")
    result["data_preparation"] = measure_data_preparation(source)
    return result


def cpu_bf16_figures(precision: str) -> dict:
    """This CPU's bf16 matrix hardware, what it measures against fp32, and the advice for `precision`."""
    return {
        "features": cpu_bf16_features(),
        "matmul_speedup": cpu_bf16_speedup(),
        "advice": cpu_precision_advice("bf16" if precision == "bf16" else "no"),
    }


def _generation(s: BenchSettings, dev: torch.device, progress) -> dict:
    progress(f"bench: generating {s.gen_tokens} tokens with and without the KV cache ({s.rounds} interleaved rounds)")
    timings: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(s.rounds):
        for use_cache in (True, False):
            timings[use_cache].append(measure_generation(s.preset, dev, s.gen_tokens, use_cache))
    cached, uncached = statistics.median(timings[True]), statistics.median(timings[False])
    return {
        "tokens": s.gen_tokens,
        "cached_tokens_per_s": cached,
        "uncached_tokens_per_s": uncached,
        "cache_speedup": cached / uncached,
    }


def format_table(r: dict) -> str:
    lines = [
        f"device: {r['device']}, {r['precision']}, preset {r['preset']}, batch {r['batch_size']} x accumulation "
        f"{r['grad_accum']}, context {r['context']}, "
        f"median of {r['steps']} x {r['rounds']} interleaved optimizer steps "
        f"(after {r['warmup']} untimed), "
        f"torch threads {r['torch_threads']}",
        f"measured {r['precision']} matmul peak: {r['matmul_peak_tflops'] * 1e3:,.1f} GFLOP/s; "
        f"{r['flops_per_token'] / 1e6:,.0f} MFLOP per trained token",
        "",
        f"{'training':<10} {'useful tok/s':>13} {'MFU':>7} {'peak MB':>9} {'padding':>8} {'ours is':>9} "
        f"{'memory vs ours':>15}",
    ]
    if "cpu_bf16" in r:
        cpu = r["cpu_bf16"]
        lines.insert(2, cpu_bf16_line(cpu["features"], cpu["matmul_speedup"]))
        if cpu["advice"]:
            lines.insert(3, cpu["advice"])
    if r["compile"]:
        compiled = ", ".join(f"{kind} {row['graphs_compiled']}" for kind, row in r["training"].items())
        lines.insert(2, f"--compile: graphs torch.compile built per implementation: {compiled}")
    for kind, row in r["training"].items():
        speedup = f"{row['ours_speedup']:.2f}x" if "ours_speedup" in row else "-"
        memory = f"{row['memory_vs_ours']:.2f}x" if "memory_vs_ours" in row else "-"
        lines.append(
            f"{kind:<10} {row['tokens_per_s']:>13,.1f} {row['mfu']:>7.1%} {row['peak_memory_mb']:>9,.0f} "
            f"{row['padding_fraction']:>8.1%} {speedup:>9} {memory:>15}"
        )
    lines += ["", f"{'evaluation':<17} {'tok/s':>10} {'vs training':>12} {'peak MB':>9} {'vs training':>12}"]
    for kind, row in r["evaluation"].items():
        lines.append(
            f"{kind:<17} {row['tokens_per_s']:>10,.1f} {row['vs_training']:>11.2f}x "
            f"{row['peak_memory_mb']:>9,.0f} {row['memory_vs_training']:>11.2f}x"
        )
    g, d = r["generation"], r["data_preparation"]
    lines += [
        "",
        f"generation of {g['tokens']} tokens: {g['cached_tokens_per_s']:,.1f} tok/s with KV cache, "
        f"{g['uncached_tokens_per_s']:,.1f} without ({g['cache_speedup']:.1f}x)",
        f"data preparation: {d['tokens']:,} tokens from {d['stories']:,} stories at {d['tokens_per_s']:,.0f} tok/s "
        f"({d['workers']} worker processes)",
    ]
    return "\n".join(lines)
