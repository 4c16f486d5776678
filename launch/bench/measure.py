"""The measurements of `gpt-launch bench`, each worker in a process of its own (`python -m launch.bench.measure SPEC`).

Figures are ratios against references measured in the same run, so they survive a noisy machine:
  - training: useful tokens/s (padding excluded) over full optimizer steps, MFU against this
    device's *measured* matmul peak, and peak memory (RSS on CPU, allocated on CUDA); against
    transformers' GPT-2 of the same size when transformers is installed;
  - evaluation: tokens/s and peak memory of a validation pass through the chunked head, next to
    training's and to the full-logits evaluation it replaced;
  - generation: tokens/s with and without the KV cache;
  - data preparation: tokens/s of tokenizing real stories on all cores.
Each training measurement runs in its own process, so peak memory belongs to that one alone. An
implementation is named "module:ATTRIBUTE", so a benchmark outside the package (benchmarks/)
measures its own side by side with ours.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt_core import EOT_ID, GPT, IGNORE_INDEX, GPTConfig, generate, get_preset, get_tokenizer
from launch.runtime.devices import synchronize
from launch.settings.config import SMOKE_DATA, DataConfig, TrainConfig, batch_size_on
from launch.training.optim import build_optimizer

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """Autocast and (fp16) loss scaling, as an implementation's step applies them."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


@dataclass(frozen=True)
class Implementation:
    """One way of training the same model: how to build it, and one optimizer step over micro-batches."""

    description: str
    build: Callable  # (GPTConfig, device, TrainConfig) -> (model, optimizer)
    step: Callable  # (model, optimizer, micro-batches, Precision) -> None
    padded_rows: bool = False  # one story per row, padded to the context (else packed rows)
    compiles: bool = False  # --compile applies to it (ours); the baselines are measured as they ship
    useful: Callable = lambda y: int((y != IGNORE_INDEX).sum())  # real targets in a micro-batch


GRAD_CLIP = TrainConfig().grad_clip  # the recipe's, for every implementation alike


def _build_ours(config: GPTConfig, device: torch.device, recipe: TrainConfig):
    model = GPT(config).to(device)
    return model, build_optimizer(model, recipe, device)


def _step_ours(model, optimizer, batches, precision: Precision) -> None:
    for x, y in batches:
        with precision.autocast():
            _, loss = model(x, y)
        precision.scaler.scale(loss / len(batches)).backward()
    precision.scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    precision.scaler.step(optimizer)
    precision.scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _build_ours_recomputing(config: GPTConfig, device: torch.device, recipe: TrainConfig):
    model, optimizer = _build_ours(config, device, recipe)
    model.activation_checkpointing = True
    return model, optimizer


OURS = Implementation(
    "gpt_core GPT: packed rows, SDPA, fused AdamW, no host sync", _build_ours, _step_ours, compiles=True
)
OURS_RECOMPUTING = Implementation(
    "ours with --activation-checkpointing: each block recomputed in the backward pass",
    _build_ours_recomputing,
    _step_ours,
    compiles=True,
)
BUILT_IN = {
    "ours": "launch.bench.measure:OURS",
    "ours_ckpt": "launch.bench.measure:OURS_RECOMPUTING",
    "hf_gpt2": "launch.bench.baselines:HF_GPT2",
}


def plain_adamw(model: torch.nn.Module, recipe: TrainConfig) -> torch.optim.AdamW:
    """The recipe's AdamW over every parameter, unfused: how the baselines step."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)


def resolve(reference: str) -> Implementation:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def default_implementations(compare: bool = True, recomputing: bool = False) -> dict[str, str]:
    """Ours; ours with activation checkpointing when `recomputing`; transformers' GPT-2 when
    `compare` and transformers is installed."""
    wanted = {"ours", *(["ours_ckpt"] if recomputing else [])}
    if compare and importlib.util.find_spec("transformers") is not None:
        wanted.add("hf_gpt2")
    return {k: v for k, v in BUILT_IN.items() if k in wanted}


# ---------------------------------------------------------------------------------------------
# Measurements, each in a process of its own
# ---------------------------------------------------------------------------------------------
def _rows(padded: bool, data: dict, context: int, batch: int, count: int, device):
    """`count` micro-batches of real stories: packed windows, or one padded story per row."""
    import numpy as np

    from launch.data.batching import PackedDataset, PaddedDataset
    from launch.data.splits import TokenSplit

    split = TokenSplit("train", np.load(data["tokens"], mmap_mode="r"), np.load(data["offsets"]), EOT_ID)
    ds = PaddedDataset(split, context) if padded else PackedDataset(split, context)
    out = []
    for i in range(count):
        rows = [ds[(i * batch + j) % len(ds)] for j in range(batch)]
        out.append((torch.stack([r[0] for r in rows]).to(device), torch.stack([r[1] for r in rows]).to(device)))
    return out


def _peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # VmHWM is this process image's own peak. ru_maxrss is not: Linux carries the pre-exec peak of a
    # forked child over, so every worker would report at least the parent's size.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


def _model_config(spec: dict) -> GPTConfig:
    return GPTConfig.from_dict(spec["model_config"]) if spec.get("model_config") else get_preset(spec["preset"])


def train_worker(spec: dict) -> dict:
    """Build one implementation, time `steps` optimizer steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    device, config, impl = torch.device(spec["device"]), _model_config(spec), resolve(spec["implementation"])
    batch, accum, warmup = spec["batch_size"], spec["grad_accum"], spec["warmup"]
    model, optimizer = impl.build(config, device, TrainConfig())  # the recipe's optimizer settings, for all alike
    # A field, not `impl is OURS`: run as `python -m`, this module is __main__, and its OURS is not the
    # object `resolve` imports.
    compiled = bool(spec.get("compile")) and impl.compiles
    if compiled:
        model.compile()  # in place, as `train --compile` does
    model.train()
    precision = Precision(
        device.type, DTYPES[spec["precision"]], torch.amp.GradScaler(device.type, enabled=spec["precision"] == "fp16")
    )
    micro = _rows(
        impl.padded_rows, spec["data"], config.context_length, batch, accum * (spec["steps"] + warmup), device
    )
    groups = [micro[i * accum : (i + 1) * accum] for i in range(spec["steps"] + warmup)]
    for group in groups[:warmup]:  # page faults, optimizer state, kernel selection, compile
        impl.step(model, optimizer, group, precision)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_step, tokens = [], 0
    for group in groups[warmup:]:
        start = time.perf_counter()
        impl.step(model, optimizer, group, precision)
        synchronize(device)
        step_tokens = sum(impl.useful(y) for _, y in group)
        per_step.append(step_tokens / (time.perf_counter() - start))
        tokens += step_tokens
    return {
        "kind": spec["kind"],
        "step_tokens_per_s": per_step,
        "useful_tokens": tokens,
        "peak_memory_mb": _peak_memory_mb(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "padding_fraction": 1 - tokens / (spec["steps"] * accum * batch * config.context_length),
        "graphs_compiled": _graphs_compiled() if compiled else 0,
    }


def _graphs_compiled() -> int:
    """How many graphs torch.compile really built in this process (0: it ran eagerly)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


EVALUATIONS = {
    "eval": "gpt_core GPT, measure=True: loss and accuracy per row through the chunked head",
    "eval_full_logits": "(c) the full (batch x context x vocab) logits, cross-entropy and argmax",
}


def full_logits_rows(model, x, y):
    """Per row (loss sum, correct, tokens) from the full logits: the evaluation the chunked head replaced."""
    logits = model(x)[0].float()
    mask = y != IGNORE_INDEX
    token_loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")
    correct = (logits.argmax(dim=-1) == y) & mask
    return torch.stack([token_loss.sum(1), correct.sum(1).float(), mask.sum(1).float()], dim=1).double()


@torch.no_grad()
def eval_worker(spec: dict) -> dict:
    """Time `steps` evaluation micro-batches of real stories, as `evaluate` runs them."""
    torch.manual_seed(0)
    device, config = torch.device(spec["device"]), _model_config(spec)
    precision = Precision(device.type, DTYPES[spec["precision"]], None)
    model = GPT(config).to(device).eval()
    warmup, steps = spec["warmup"], spec["steps"] * spec["grad_accum"]  # as many micro-batches as training timed
    micro = _rows(False, spec["data"], config.context_length, spec["batch_size"], steps + warmup, device)

    def measure(x, y):
        with precision.autocast():
            return model(x, y, measure=True)[1] if spec["kind"] == "eval" else full_logits_rows(model, x, y)

    for x, y in micro[:warmup]:
        measure(x, y)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_batch = []
    for x, y in micro[warmup:]:
        start = time.perf_counter()
        rows = measure(x, y)
        tokens = int(rows[:, 2].sum())  # reading the count back also waits for the device
        per_batch.append(tokens / (time.perf_counter() - start))
    return {"kind": spec["kind"], "step_tokens_per_s": per_batch, "peak_memory_mb": _peak_memory_mb(device)}


def _in_subprocess(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "launch.bench.measure", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['kind']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(spec: dict, kinds: dict[str, tuple[str, dict]], rounds: int, what: str, progress) -> dict:
    """Each kind (name -> (description, its spec)) in its own process, `rounds` interleaved rounds,
    per-step figures pooled and the median taken over them all: a slow moment of a shared machine
    hits every kind alike instead of whichever happened to run then."""
    pooled: dict[str, dict] = {}
    for round_index in range(rounds):
        for kind, (about, extra) in kinds.items():
            progress(f"bench: {what} {kind} (round {round_index + 1}/{rounds}): {about}")
            row = _in_subprocess({**spec, **extra, "kind": kind})
            into = pooled.setdefault(kind, {**row, "step_tokens_per_s": []})
            into["step_tokens_per_s"] += row["step_tokens_per_s"]
            into["peak_memory_mb"] = max(into["peak_memory_mb"], row["peak_memory_mb"])
    for row in pooled.values():
        row["tokens_per_s"] = statistics.median(row["step_tokens_per_s"])
    return pooled


def story_files(source: str | None = None, cache_dir: str | None = None) -> dict:
    """The token and offset files of the train split of `source` (default: the shipped smoke stories)."""
    from launch.data.prepare import prepare_data

    cfg = DataConfig(source=source or str(SMOKE_DATA), max_samples=None, cache_dir=cache_dir)
    prepared = prepare_data(cfg, log=lambda *_: None)
    return {
        "tokens": str(prepared.cache_dir / "train.tokens.npy"),
        "offsets": str(prepared.cache_dir / "train.offsets.npy"),
    }


def measure_our_training(
    config: GPTConfig,
    device: torch.device,
    batch_size: int | None = None,
    grad_accum: int = 2,
    steps: int = 3,
    warmup: int = 2,
) -> float:
    """Our fp32 training throughput in useful tokens/s (median step), measured exactly as the benchmark
    measures it, in this process: what `gpt-launch info` estimates an epoch from."""
    spec = {
        "kind": "ours",
        "implementation": BUILT_IN["ours"],
        "model_config": config.to_dict(),
        "batch_size": batch_size_on(device.type, batch_size),
        "grad_accum": grad_accum,
        "steps": steps,
        "warmup": warmup,
        "device": str(device),
        "precision": "fp32",
        "data": story_files(),
    }
    return statistics.median(train_worker(spec)["step_tokens_per_s"])


def measure_generation(preset: str, device, tokens: int, use_cache: bool) -> float:
    torch.manual_seed(0)
    model = GPT(get_preset(preset)).to(device).eval()
    prompt = get_tokenizer().encode("Once upon a time")
    generate(model, prompt, 4, greedy=True, eos_id=None, use_cache=use_cache)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    out = generate(model, prompt, tokens, greedy=True, eos_id=None, use_cache=use_cache)
    synchronize(device)
    return len(out) / (time.perf_counter() - start)


def measure_data_preparation(source: str) -> dict:
    """A cold preparation of `source` into a scratch cache (benchmarks/data_pipeline.py measures it at scale)."""
    from launch.data.prepare import prepare_data

    with tempfile.TemporaryDirectory() as scratch:
        meta = prepare_data(DataConfig(source=source, max_samples=None, cache_dir=scratch), log=lambda *_: None).meta
    return {
        "stories": sum(s["stories"] for s in meta["splits"].values()),
        "tokens": sum(s["tokens"] for s in meta["splits"].values()),
        "tokens_per_s": meta["tokens_per_second"],
        "workers": meta["workers"],
    }


if __name__ == "__main__":  # a worker: one measurement, JSON on the last line of stdout
    worker_spec = json.loads(sys.argv[1])
    worker = eval_worker if worker_spec["kind"] in EVALUATIONS else train_worker
    print(json.dumps(worker(worker_spec)))
