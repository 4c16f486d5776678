"""The end of a finished run: test metrics and samples from the best weights, curves, summary.json."""

from __future__ import annotations

import dataclasses
import platform
import time

import torch

from gpt_core import Tokenizer, generate, load_pretrained
from launch.checkpoints.folders import find_best
from launch.runtime.devices import device_name
from launch.runtime.processes import fault_point
from launch.tracking.curves import plot_curves
from launch.tracking.summary import RunSummary
from launch.tracking.trackers import read_metrics, scrub

from .evaluation import evaluate, metrics_text
from .run import Run


def test_and_summarise(run: Run, reason: str) -> dict:
    """Every process tests (the loader is sharded); the main process samples and writes the rest."""
    acc, state = run.accelerator, run.state
    best_dir = find_best(run.run_dir)
    # A plain gpt_core model from the best safetensors: the same path under DDP, ZeRO-2 and ZeRO-3.
    best = load_pretrained(best_dir).to(acc.device)
    fault_point("kill-during-test")
    test = evaluate(best, run.loaders["test"], acc, run.data.tokenizer, run.cfg.test_batches, desc="test")
    capped = f", first {run.cfg.test_batches} batches per process" if run.cfg.test_batches else ""
    run.say(f"test (best weights, step {run.early.best_step}{capped}): {metrics_text(test)}")
    run.log.log({"kind": "test", "step": state.step, **test})
    summary = {"stop_reason": reason, "steps": state.step, "test": test}  # what every process knows
    if acc.is_main_process:
        samples = sample_stories(best, run.data.tokenizer, run.cfg.prompts, run.cfg.sample_tokens, run.cfg.seed)
        for s in samples:
            run.say(f"sample: {s['prompt']}{s['text']}\n")
        curves = plot_curves(read_metrics(run.run_dir), run.run_dir / "curves.png")
        record = summary_record(run, reason, test, samples, best_dir)
        path = record.save(run.run_dir)
        summary = dataclasses.asdict(record)
        run.log.log_samples(samples, state.step)
        run.log.log_image("curves", curves, state.step)
        run.log.log_summary(
            {k: summary[k] for k in ("best_validation", "test", "throughput_tokens_per_s", "steps")}
            | {"parameters": run.model_config.num_params()}
        )
        if run.cfg.log_checkpoint:
            run.log.log_artifact(best_dir, f"{run.cfg.run_name or run.run_dir.name}-best")
        run.say(f"done: {reason}; summary in {path}, curves in {curves}")
    acc.wait_for_everyone()
    return summary


def summary_record(run: Run, reason: str, test: dict, samples: list[dict], best_dir) -> RunSummary:
    acc, state, cfg = run.accelerator, run.state, run.cfg
    train_records = [r for r in read_metrics(run.run_dir) if r["kind"] == "train" and r.get("tokens_per_s")]
    throughput = sum(r["tokens_per_s"] for r in train_records) / len(train_records) if train_records else 0.0
    return RunSummary(
        **scrub(
            {
                "stop_reason": reason,
                "steps": state.step,
                "epochs_completed": state.epoch,
                "tokens": state.tokens,
                "best_step": run.early.best_step,
                "best_validation": run.early.best_validation,
                "test": test,
                "samples": samples,
                "throughput_tokens_per_s": throughput,
                "elapsed_seconds": time.time() - run.start_time,
                "model": {
                    "preset": cfg.preset,
                    "parameters": run.model_config.num_params(),
                    **run.model_config.to_dict(),
                },
                "data": {"cache": str(run.data.cache_dir), **run.data.meta},
                "hardware": {
                    "device": device_name(acc.device),
                    "processes": acc.num_processes,
                    "mixed_precision": acc.mixed_precision,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
                "best_checkpoint": str(best_dir),
                "config": cfg.to_dict(),
            }
        )
    )


def sample_stories(model, tokenizer: Tokenizer, prompts: tuple[str, ...], max_tokens: int, seed: int) -> list[dict]:
    """One story per prompt, seeded by `seed` + its index, as a run's summary records them."""
    samples = []
    for i, prompt in enumerate(prompts):
        ids = generate(model, tokenizer.encode(prompt), max_tokens, eos_id=tokenizer.eot_id, seed=seed + i)
        samples.append({"prompt": prompt, "text": tokenizer.decode([t for t in ids if t != tokenizer.eot_id])})
    return samples
