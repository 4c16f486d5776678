"""The paper's block against today's small-LM recipe: each change alone, and all of them together, on
the `small` budget with a 4,096-token story tokenizer, at equal wall clock. A repository benchmark
(not installed); run it from the repository's root:

    python -m benchmarks.modern_block --data ../shared/data/tinystories --minutes 10

Each variant is a real `gpt-launch train` run (its model a --model-config file), the same recipe and
seed for all, its learning-rate schedule spanning the steps a short probe says its budget allows
(benchmarks/story_tokenizer.py's method). The budget is given in --rounds interleaved slices, so a
change in the machine's speed falls on every variant alike. Scored at the end by `gpt-launch
evaluate` on the whole validation split, in bits per byte; and, from the validations logged along
the way (20 batches each), the share of its budget each variant took to reach the paper block's
last logged validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.story_tokenizer import RECIPE, SCHEDULED_SHARE, cli, last_checkpoint_figures, tokens_per_second
from gpt_core import get_preset

from .results import write_result

# name -> (changes to `small`, or a preset's name; extra train flags)
VARIANTS = {
    "paper block (small)": ({}, []),
    "+ RoPE": ({"positions": "rope"}, []),
    "+ RMSNorm": ({"normalization": "rmsnorm"}, []),
    "+ SwiGLU": ({"activation": "swiglu", "d_ff": 344}, []),  # 2/3 of d_ff: the same parameters
    "+ ReLU²": ({"activation": "relu2"}, []),
    "+ QK-norm": ({"qk_norm": True}, []),
    "+ Muon": ({}, ["--optimizer", "muon"]),
    "all (llama-small + Muon)": ("llama-small", ["--optimizer", "muon"]),
}
PROBE_STEPS = 30
EVAL_EVERY = 100
VOCAB = 4096
RECIPE_FLAGS = [flag for flag in RECIPE if flag not in ("--preset", "small")]  # the model comes from a file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="The stories (e.g. ../shared/data/tinystories).")
    parser.add_argument("--work", default="/tmp/modern-block-bench", help="Runs, tokenizer and caches go here.")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training budget per variant.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved slices the budget is given in.")
    parser.add_argument("--only", nargs="*", default=None, help="Run these variants only (names as in the table).")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", default=None, help="Also write the figures here.")
    parser.add_argument(
        "--save", action="store_true", help="Keep the figures and their provenance in benchmarks/results/."
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = prepare(args, work)
    for round_ in range(args.rounds):
        for name, r in results.items():
            session = ["--max-minutes", str(args.minutes / args.rounds)]
            first = ["--max-steps", str(r["planned_steps"]), "--overwrite"] if round_ == 0 else ["--resume", "auto"]
            cli("train", *r["flags"], *session, *first, log=work / "bench.log")
            print(f"{name}: round {round_ + 1} done", file=sys.stderr)
    for r in results.values():
        score(r, args, work)
    reach(results)
    print(format_table(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.save:
        print(f"saved in {write_result('modern_block', results)}")


def prepare(args, work: Path) -> dict:
    """The story tokenizer, each variant's model file and flags, and its probe speed."""
    tokenizer = work / f"tokenizer-{VOCAB}"
    data = ["--data", args.data, "--data-cache", str(work / "cache")]
    if not (tokenizer / "tokenizer.json").exists():
        cli("tokenizer", "train", *data, "--vocab-size", str(VOCAB), "--output", str(tokenizer), log=work / "bench.log")
    results = {}
    for index, (name, (model, extra)) in enumerate(VARIANTS.items()):
        if args.only and name not in args.only:
            continue
        config = get_preset(model) if isinstance(model, str) else get_preset("small").replace(**model)
        config_file = work / f"model-{index}.json"
        config_file.write_text(json.dumps(config.to_dict(), indent=2))
        run_dir = work / f"run-{index}"
        flags = [*data, *RECIPE_FLAGS, "--seed", str(args.seed), "--tokenizer", str(tokenizer)]
        flags += ["--model-config", str(config_file), *extra, "--eval-every", str(EVAL_EVERY)]
        probe = work / f"probe-{index}"
        cli(
            "train",
            *flags,
            "--max-steps",
            str(PROBE_STEPS),
            "--output-dir",
            str(probe),
            "--overwrite",
            log=work / "bench.log",
        )
        speed = tokens_per_second(probe)
        steps = int(SCHEDULED_SHARE * speed * args.minutes * 60 / (16 * 128))  # RECIPE: 16 rows of 128
        results[name] = {
            "run_dir": run_dir,
            "flags": [*flags, "--output-dir", str(run_dir)],
            "planned_steps": steps,
            "params": config.replace(vocab_size=VOCAB).num_params(),
        }
        print(f"{name}: probe {speed:,.0f} tokens/s, {steps:,} steps planned", file=sys.stderr)
    return results


def score(r: dict, args, work: Path) -> None:
    """The last checkpoint on the whole validation split, the logged curve, the speed and a sample."""
    last, metrics, sample = last_checkpoint_figures(r["run_dir"], work, args.seed, 120)
    rows = [json.loads(line) for line in (r["run_dir"] / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = int(last.name.split("-")[1])
    r.update(
        steps=steps,
        tokens_per_s=tokens_per_second(r["run_dir"]),
        validation_bits_per_byte=metrics["bits_per_byte"],
        curve=[(row["step"], row["bits_per_byte"]) for row in rows if row.get("kind") == "eval"],
        sample=sample,
    )


def reach(results: dict) -> None:
    """The share of its steps (its budget, at its steady speed) each variant took to reach the paper
    block's last logged validation bits per byte; None if it never did."""
    base_curve = next(iter(results.values()))["curve"]
    target = base_curve[-1][1] if base_curve else float("-inf")  # a budget too short to validate in
    for r in results.values():
        hit = next((step for step, bpb in r["curve"] if bpb <= target), None)
        r["reach_share"] = None if hit is None else hit / r["steps"]


def format_table(results: dict, args) -> str:
    base = next(iter(results.values()))
    lines = [
        f"`small` budget, story BPE {VOCAB:,}, {args.minutes:g} min of training each in {args.rounds} interleaved "
        f"slices, seed {args.seed}; validation bits per byte on the whole split",
        "",
        "| variant | params | tokens/s | steps | val bits/byte | vs paper block | time to the paper block's "
        "last validation |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        share = "never" if r["reach_share"] is None else f"{r['reach_share']:.0%}"
        bpb = r["validation_bits_per_byte"]
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f} M | {r['tokens_per_s']:,.0f} | {r['steps']:,} "
            f"| {bpb:.4f} | {bpb - base['validation_bits_per_byte']:+.4f} | {share} |"
        )
    for name, r in results.items():
        lines += ["", f"{name} sample (seed {args.seed}):", r["sample"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
