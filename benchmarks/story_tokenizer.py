"""Is a tokenizer trained on the stories worth it? GPT-2 BPE against story-trained BPEs of 4,096 and
1,024 tokens, on the same model shape (`small`), at the same wall-clock budget. A repository
benchmark (not installed); run it from the repository's root:

    python -m benchmarks.story_tokenizer --data ../shared/data/tinystories --minutes 10 --rounds 2

Each tokenizer's run is a real `gpt-launch train` process, the same settings and seed for all. The
budget is given in `--rounds` interleaved slices (`--max-minutes`, then `--resume auto`), so a
change in the machine's speed during the benchmark falls on every tokenizer alike. The learning
rate schedule of each run spans the steps it can make in its budget, from a short probe run first.
At the end, each run's last checkpoint is measured on the whole validation split with `gpt-launch
evaluate`: bits per byte (loss in bits over the UTF-8 bytes of the text), the figure that compares
across tokenizers, and perplexity, which does not. Bytes of text per second are the training tokens
per second times the text bytes per token of the train split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gpt_core import get_preset, load_tokenizer
from launch.data.prepare import prepare_data
from launch.settings.config import DataConfig
from launch.training.evaluation import byte_lengths

from .results import write_result

TOKENIZERS = {"GPT-2 BPE": None, "story BPE 4,096": 4096, "story BPE 1,024": 1024}
PROBE_STEPS = 30
SCHEDULED_SHARE = 0.95  # of the budget's steps at the probe's speed: validations and checkpoints take the rest
# The one recipe every tokenizer trains with: the `small` shape, 16 rows of 128 tokens per update.
RECIPE = [
    "--preset",
    "small",
    "--batch-size",
    "8",
    "--grad-accum",
    "2",
    "--lr",
    "2e-3",
    "--warmup-steps",
    "50",
    "--epochs",
    "1000",
    "--patience",
    "1000",
    "--eval-batches",
    "20",
    "--log-every",
    "10",
    "--sample-tokens",
    "0",
    "--test-batches",
    "1",
]


def cli(*args: str, log: Path | None = None) -> float:
    """Run `gpt-launch ARGS` (as a user would); returns its wall time. Its output goes to `log`."""
    start = time.perf_counter()
    with open(log or "/dev/null", "a") as out:
        done = subprocess.run([sys.executable, "-m", "launch.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"gpt-launch {' '.join(args)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - start


def tokens_per_second(run_dir: Path) -> float:
    """The median of the training tokens/s the run logged (each over its last --log-every steps)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["tokens_per_s"] for r in rows if r.get("kind") == "train" and r.get("tokens_per_s")]
    return statistics.median(speeds[1:] or speeds)  # the first window pays for the warm-up


def split_figures(data: DataConfig) -> dict:
    """Tokens per story and text bytes per token of the train and validation splits."""
    prepared = prepare_data(data, None, log=lambda _: None)
    lengths = byte_lengths(load_tokenizer(data.tokenizer), torch.device("cpu"))
    figures = {"vocab_size": prepared.tokenizer.vocab_size}
    for name in ("train", "validation"):
        split = prepared.splits[name]
        tokens = len(split.tokens)
        text_bytes = float(lengths[torch.from_numpy(split.tokens.astype("int64"))].sum())
        figures[name] = {"tokens_per_story": tokens / split.num_stories, "bytes_per_token": text_bytes / tokens}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="The stories (e.g. ../shared/data/tinystories).")
    parser.add_argument("--work", default="/tmp/story-tokenizer-bench", help="Runs, tokenizers and caches go here.")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training budget per tokenizer.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved slices the budget is given in.")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", default=None, help="Also write the figures here.")
    parser.add_argument(
        "--save", action="store_true", help="Keep the figures and their provenance in benchmarks/results/."
    )
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    results = probe(args)
    train_interleaved(results, args)
    measure(results, args)
    print(format_table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.save:
        print(f"saved in {write_result('story_tokenizer', results)}")


def data_flags(args) -> list[str]:
    return ["--data", args.data, "--data-cache", str(Path(args.work) / "cache")]


def common_flags(args) -> list[str]:
    return [*data_flags(args), *RECIPE, "--seed", str(args.seed)]


def probe(args) -> dict:
    """Train each tokenizer (when missing), measure its splits, and time a short probe run."""
    work, results = Path(args.work), {}
    for name, vocab in TOKENIZERS.items():
        tokenizer = None if vocab is None else work / f"tokenizer-{vocab}"
        if tokenizer is not None and not (tokenizer / "tokenizer.json").exists():
            train_flags = ["--vocab-size", str(vocab), "--output", str(tokenizer)]
            cli("tokenizer", "train", *data_flags(args), *train_flags, log=work / "bench.log")
        flags = [] if tokenizer is None else ["--tokenizer", str(tokenizer)]
        probe_dir = work / f"probe-{vocab or 'gpt2'}"
        steps = ["--max-steps", str(PROBE_STEPS), "--output-dir", str(probe_dir), "--overwrite"]
        cli("train", *common_flags(args), *flags, *steps, log=work / "bench.log")
        data = DataConfig(args.data, cache_dir=str(work / "cache"), tokenizer=tokenizer and str(tokenizer))
        results[name] = {
            "flags": flags,
            "run_dir": work / f"run-{vocab or 'gpt2'}",
            "probe_tokens_per_s": tokens_per_second(probe_dir),
            **split_figures(data),
        }
        print(f"{name}: probe {results[name]['probe_tokens_per_s']:,.0f} tokens/s", file=sys.stderr)
    return results


def train_interleaved(results: dict, args) -> None:
    """Each run's budget in --rounds slices, the tokenizers taking turns; the schedule of each spans
    the steps its budget allows at the probe's speed."""
    tokens_per_step = 16 * 128
    for r in results.values():
        r["planned_steps"] = int(SCHEDULED_SHARE * r["probe_tokens_per_s"] * args.minutes * 60 / tokens_per_step)
        r["wall_seconds"] = 0.0
    for round_ in range(args.rounds):
        for name, r in results.items():
            session = ["--max-minutes", str(args.minutes / args.rounds), "--output-dir", str(r["run_dir"])]
            first = ["--max-steps", str(r["planned_steps"]), "--overwrite"] if round_ == 0 else ["--resume", "auto"]
            log = Path(args.work) / "bench.log"
            r["wall_seconds"] += cli("train", *common_flags(args), *r["flags"], *session, *first, log=log)
            print(f"{name}: round {round_ + 1} done", file=sys.stderr)


def last_checkpoint_figures(run_dir: Path, work: Path, seed: int, sample_tokens: int) -> tuple[Path, dict, str]:
    """A run's last checkpoint, its metrics on the whole validation split (`gpt-launch evaluate`),
    and a sample story from it (`gpt-launch generate`, seeded)."""
    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    out = work / f"validation-{run_dir.name}.json"
    cli("evaluate", str(last), "--split", "validation", "--json-out", str(out), log=work / "bench.log")
    generate = ["generate", str(last), "--seed", str(seed), "--max-tokens", str(sample_tokens)]
    sample = subprocess.run(
        [sys.executable, "-m", "launch.cli", *generate], capture_output=True, text=True, check=True
    ).stdout.strip()
    return last, json.loads(out.read_text()), sample


def measure(results: dict, args) -> None:
    """Each run's last checkpoint on the whole validation split, its speed, and a sample story."""
    for r in results.values():
        last, metrics, sample = last_checkpoint_figures(r["run_dir"], Path(args.work), args.seed, 200)
        speed = tokens_per_second(r["run_dir"])
        r.update(
            steps=int(last.name.split("-")[1]),
            tokens_per_s=speed,
            bytes_per_s=speed * r["train"]["bytes_per_token"],
            validation_bits_per_byte=metrics["bits_per_byte"],
            validation_perplexity=metrics["perplexity"],
            sample=sample,
        )


def format_table(results: dict, args) -> str:
    base = results["GPT-2 BPE"]
    lines = [
        f"small preset, {args.minutes:g} min of training each in {args.rounds} interleaved slices, seed {args.seed}",
        "",
        "| tokenizer | vocab | params | tokens/story | bytes/token | tokens/s | bytes/s | x GPT-2 | steps "
        "| val bits/byte | val ppl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        params = get_preset("small").replace(vocab_size=r["vocab_size"]).num_params()
        lines.append(
            f"| {name} | {r['vocab_size']:,} | {params / 1e6:.2f} M | {r['validation']['tokens_per_story']:.1f} "
            f"| {r['train']['bytes_per_token']:.2f} | {r['tokens_per_s']:,.0f} | {r['bytes_per_s']:,.0f} "
            f"| {r['bytes_per_s'] / base['bytes_per_s']:.2f} | {r['steps']:,} | {r['validation_bits_per_byte']:.4f} "
            f"| {r['validation_perplexity']:.2f} |"
        )
    for name, r in results.items():
        lines += ["", f"{name} sample (seed {args.seed}):", r["sample"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
