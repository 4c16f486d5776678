"""`gpt-launch bench`: what this machine gets out of each implementation, measured in one run.

Figures are ratios against baselines measured in the same run, so they survive a noisy machine:
  - training: useful tokens/s (padding excluded) over full optimizer steps, MFU against this
    device's *measured* matmul peak, and peak memory (RSS on CPU, allocated on CUDA);
  - evaluation: tokens/s and peak memory of a validation pass through the chunked head, next to
    training's and to the full-logits evaluation it replaced;
  - generation: tokens/s with and without the KV cache;
  - data preparation: tokens/s of tokenizing real stories on all cores.
Each training measurement runs in its own process, so peak memory belongs to that one alone.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpt_core import GPT, GPTConfig, generate, get_preset, get_tokenizer
from launch.runtime import default_batch_size, device_name, resolve_device

IMPLEMENTATIONS = {
    "ours": "gpt_core GPT: packed rows, SDPA, fused AdamW, no host sync",
    "paper": "(a) the paper's recipe: hand-written masked attention, stories padded to 256, accuracy read back each micro-batch",
    "hf_gpt2": "(b) transformers GPT2LMHeadModel, same size, packed rows, plain AdamW step",
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, sizes=None, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` square matmuls at each size: the best this device really
    reaches. Taking the best makes MFU conservative (a slow moment lowers MFU, never raises it)."""
    sizes = sizes or ((4096, 8192) if device.type == "cuda" else (2048, 4096))
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b  # warm-up
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def _rows(kind: str, data: dict, context: int, batch: int, count: int, device):
    """`count` micro-batches of real stories: packed windows, or one padded story per row."""
    import numpy as np

    from launch.data import PackedDataset, PaddedDataset, TokenSplit

    split = TokenSplit("train", np.load(data["tokens"], mmap_mode="r"), np.load(data["offsets"]))
    ds = PaddedDataset(split, context) if kind == "paper" else PackedDataset(split, context)
    out = []
    for i in range(count):
        rows = [ds[(i * batch + j) % len(ds)] for j in range(batch)]
        x = torch.stack([r[0] for r in rows]).to(device)
        y = torch.stack([r[1] for r in rows]).to(device)
        out.append((x, y))
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


def train_worker(spec: dict) -> dict:
    """Runs in its own process: build one implementation, time `steps` optimizer steps."""
    from launch.bench import baselines
    from launch.config import TrainConfig
    from launch.train import build_optimizer

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    config = GPTConfig.from_dict(spec["model_config"]) if spec.get("model_config") else get_preset(spec["preset"])
    paper = TrainConfig()  # the recipe's optimizer settings, for every implementation alike
    kind, batch, accum = spec["kind"], spec["batch_size"], spec["grad_accum"]
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec["precision"]]
    if kind == "ours":
        model = GPT(config).to(device)
        optimizer = build_optimizer(model, paper, device)
    else:
        model = (baselines.PaperGPT(config) if kind == "paper" else baselines.hf_gpt2(config)).to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=paper.lr, betas=paper.betas, weight_decay=paper.weight_decay
        )
    if spec.get("compile") and kind == "ours":
        model = torch.compile(model)
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=spec["precision"] == "fp16")
    warmup = spec["warmup"]
    micro = _rows(kind, spec["data"], config.context_length, batch, accum * (spec["steps"] + warmup), device)

    def useful(y):  # real targets: padding never counted; GPT-2 predicts T-1 of its T inputs
        return int((y != -100).sum()) if kind == "paper" else y.shape[0] * (y.shape[1] - (kind == "hf_gpt2"))

    def ours_step(batches):
        for x, y in batches:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                _, loss = model(x, y)
            scaler.scale(loss / len(batches)).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), paper.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def baseline_step(batches):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if kind == "paper":
                baselines.paper_step(model, optimizer, batches)
            else:
                baselines.hf_step(model, optimizer, batches)

    step = ours_step if kind == "ours" else baseline_step
    groups = [micro[i * accum : (i + 1) * accum] for i in range(spec["steps"] + warmup)]
    for group in groups[:warmup]:  # page faults, optimizer state, kernel selection, compile
        step(group)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_step, tokens = [], 0
    for group in groups[warmup:]:
        start = time.perf_counter()
        step(group)
        _sync(device)
        step_tokens = sum(useful(y) for _, y in group)
        per_step.append(step_tokens / (time.perf_counter() - start))
        tokens += step_tokens
    params = sum(p.numel() for p in model.parameters())
    return {
        "kind": kind,
        "step_tokens_per_s": per_step,
        "useful_tokens": tokens,
        "peak_memory_mb": _peak_memory_mb(device),
        "parameters": params,
        "padding_fraction": 1 - tokens / (spec["steps"] * accum * batch * config.context_length),
    }


EVALUATIONS = {
    "eval": "gpt_core GPT, measure=True: loss and accuracy per row through the chunked head",
    "eval_full_logits": "(c) the full (batch x context x vocab) logits, cross-entropy and argmax",
}


@torch.no_grad()
def eval_worker(spec: dict) -> dict:
    """Runs in its own process: time `steps` evaluation micro-batches of real stories, as `evaluate` runs them."""
    from launch.bench.baselines import full_logits_rows

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    config = GPTConfig.from_dict(spec["model_config"]) if spec.get("model_config") else get_preset(spec["preset"])
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec["precision"]]
    model = GPT(config).to(device).eval()
    warmup, steps = spec["warmup"], spec["steps"] * spec["grad_accum"]  # as many micro-batches as training timed
    micro = _rows("ours", spec["data"], config.context_length, spec["batch_size"], steps + warmup, device)

    def measure(x, y):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model(x, y, measure=True)[1] if spec["kind"] == "eval" else full_logits_rows(model, x, y)

    for x, y in micro[:warmup]:
        measure(x, y)
    _sync(device)
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
        [sys.executable, "-m", "launch.bench.run", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['kind']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def story_files(source: str | None = None, cache_dir: str | None = None) -> dict:
    """The token and offset files of the train split of `source` (default: the shipped smoke stories)."""
    from launch.data import SMOKE_DATA, DataConfig, prepare_data

    prepared = prepare_data(
        DataConfig(source=source or str(SMOKE_DATA), max_samples=None, cache_dir=cache_dir), log=lambda *_: None
    )
    return {
        "tokens": str(prepared.cache_dir / "train.tokens.npy"),
        "offsets": str(prepared.cache_dir / "train.offsets.npy"),
        "cache_root": str(prepared.cache_dir.parent.parent),
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
        "model_config": config.to_dict(),
        "batch_size": batch_size or default_batch_size(device),
        "grad_accum": grad_accum,
        "steps": steps,
        "warmup": warmup,
        "device": str(device),
        "precision": "fp32",
        "data": story_files(),
    }
    return statistics.median(train_worker(spec)["step_tokens_per_s"])


def measure_evaluation(spec: dict, rounds: int, progress=print) -> dict:
    """Evaluation at the training micro-batch size, each kind in its own process, interleaved rounds."""
    pooled = {}
    for round_index in range(rounds):
        for kind in EVALUATIONS:
            progress(f"bench: evaluating with {kind} (round {round_index + 1}/{rounds}): {EVALUATIONS[kind]}")
            row = _in_subprocess({**spec, "kind": kind, "compile": False})
            into = pooled.setdefault(kind, {**row, "step_tokens_per_s": []})
            into["step_tokens_per_s"] += row["step_tokens_per_s"]
            into["peak_memory_mb"] = max(into["peak_memory_mb"], row["peak_memory_mb"])
    for row in pooled.values():
        row["tokens_per_s"] = statistics.median(row["step_tokens_per_s"])
    return pooled


def measure_generation(preset: str, device, tokens: int, use_cache: bool) -> float:
    torch.manual_seed(0)
    model = GPT(get_preset(preset)).to(device).eval()
    prompt = get_tokenizer().encode("Once upon a time")
    generate(model, prompt, 4, greedy=True, eos_id=None, use_cache=use_cache)  # warm-up
    _sync(device)
    start = time.perf_counter()
    out = generate(model, prompt, tokens, greedy=True, eos_id=None, use_cache=use_cache)
    _sync(device)
    return len(out) / (time.perf_counter() - start)


def measure_data_preparation(source: str) -> dict:
    """A cold preparation of `source` into a scratch cache (`launch.bench.data` measures it at scale)."""
    from launch.data import DataConfig, prepare_data

    with tempfile.TemporaryDirectory() as scratch:
        meta = prepare_data(DataConfig(source=source, max_samples=None, cache_dir=scratch), log=lambda *_: None).meta
    return {
        "stories": sum(s["stories"] for s in meta["splits"].values()),
        "tokens": sum(s["tokens"] for s in meta["splits"].values()),
        "tokens_per_s": meta["tokens_per_second"],
        "workers": meta["workers"],
    }


def run_bench(
    preset="paper",
    batch_size=None,
    grad_accum=2,
    steps=3,
    warmup=2,
    device="auto",
    precision=None,
    data=None,
    baselines=True,
    gen_tokens=300,
    compile=False,
    cache_dir=None,
    rounds=2,
    progress=print,
) -> dict:
    from launch.data import SMOKE_DATA

    dev = resolve_device(device)
    precision = precision or ("fp32" if dev.type == "cpu" else "bf16")
    batch = batch_size or default_batch_size(dev)
    config = get_preset(preset)
    source = data or str(SMOKE_DATA)
    data_files = story_files(source, cache_dir)
    peak_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    progress(f"bench: measuring the {precision} matmul peak on {dev}")
    peak = measure_matmul_peak(dev, peak_dtype)
    flops_per_token = config.flops_per_token()
    result = {
        "device": device_name(dev),
        "precision": precision,
        "preset": preset,
        "batch_size": batch,
        "grad_accum": grad_accum,
        "context": config.context_length,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "data": source,
        "torch_threads": torch.get_num_threads(),
        "matmul_peak_tflops": peak / 1e12,
        "flops_per_token": flops_per_token,
        "training": {},
        "compile": compile,
    }
    kinds = ["ours", "paper", "hf_gpt2"] if baselines else ["ours"]
    spec = {
        "preset": preset,
        "batch_size": batch,
        "grad_accum": grad_accum,
        "steps": steps,
        "device": str(dev),
        "precision": precision,
        "data": data_files,
        "compile": compile,
        "warmup": warmup,
    }
    # Interleaved rounds, median per-step throughput: a slow moment of a shared machine hits every
    # implementation alike instead of whichever happened to run then.
    for round_index in range(rounds):
        for kind in kinds:
            progress(f"bench: training {kind} (round {round_index + 1}/{rounds}): {IMPLEMENTATIONS[kind]}")
            row = _in_subprocess({**spec, "kind": kind})
            pooled = result["training"].setdefault(kind, {**row, "step_tokens_per_s": []})
            pooled["step_tokens_per_s"] += row["step_tokens_per_s"]
            pooled["peak_memory_mb"] = max(pooled["peak_memory_mb"], row["peak_memory_mb"])
    for row in result["training"].values():
        row["tokens_per_s"] = statistics.median(row["step_tokens_per_s"])
    ours = result["training"]["ours"]["tokens_per_s"]
    for kind in kinds[1:]:
        result["training"][kind]["ours_speedup"] = ours / result["training"][kind]["tokens_per_s"]
    # The peak again, after the runs: the higher of the two is the denominator of MFU.
    peak = max(peak, measure_matmul_peak(dev, peak_dtype))
    result["matmul_peak_tflops"] = peak / 1e12
    for row in result["training"].values():
        row["mfu"] = row["tokens_per_s"] * flops_per_token / peak
    result["evaluation"] = measure_evaluation(spec, rounds, progress)
    for row in result["evaluation"].values():
        row["vs_training"] = row["tokens_per_s"] / ours
        row["memory_vs_training"] = row["peak_memory_mb"] / result["training"]["ours"]["peak_memory_mb"]
    progress(f"bench: generating {gen_tokens} tokens with and without the KV cache ({rounds} interleaved rounds)")
    timings = {True: [], False: []}
    for _ in range(rounds):
        for use_cache in (True, False):
            timings[use_cache].append(measure_generation(preset, dev, gen_tokens, use_cache))
    cached, uncached = statistics.median(timings[True]), statistics.median(timings[False])
    result["generation"] = {
        "tokens": gen_tokens,
        "cached_tokens_per_s": cached,
        "uncached_tokens_per_s": uncached,
        "cache_speedup": cached / uncached,
    }
    progress("bench: preparing the stories from scratch")
    result["data_preparation"] = measure_data_preparation(source)
    return result


def format_table(r: dict) -> str:
    lines = [
        f"device: {r['device']}, {r['precision']}, preset {r['preset']}, batch {r['batch_size']} x accumulation "
        f"{r['grad_accum']}, context {r['context']}, median of {r['steps']} x {r['rounds']} interleaved optimizer steps "
        f"(after {r['warmup']} untimed), "
        f"torch threads {r['torch_threads']}",
        f"measured {r['precision']} matmul peak: {r['matmul_peak_tflops'] * 1e3:,.1f} GFLOP/s; "
        f"{r['flops_per_token'] / 1e6:,.0f} MFLOP per trained token",
        "",
        f"{'training':<10} {'useful tok/s':>13} {'MFU':>7} {'peak MB':>9} {'padding':>8} {'ours is':>9}",
    ]
    for kind, row in r["training"].items():
        speedup = f"{row['ours_speedup']:.2f}x" if "ours_speedup" in row else "-"
        lines.append(
            f"{kind:<10} {row['tokens_per_s']:>13,.1f} {row['mfu']:>7.1%} {row['peak_memory_mb']:>9,.0f} "
            f"{row['padding_fraction']:>8.1%} {speedup:>9}"
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


if __name__ == "__main__":  # a worker: one measurement, JSON on the last line of stdout
    worker_spec = json.loads(sys.argv[1])
    worker = eval_worker if worker_spec["kind"] in EVALUATIONS else train_worker
    print(json.dumps(worker(worker_spec)))
