"""Data preparation at scale (a repository benchmark: it reads ../shared and the git history, so it
is not part of the installed package): a synthetic TinyStories-sized corpus, and three ways to prepare it.

    python -m benchmarks.data_pipeline corpus /scratch/corpus-1m --stories 1000000
    python -m benchmarks.data_pipeline run /scratch/corpus-1m --workers 2

`corpus` writes stories that are new mixes of real sentences from the shared TinyStories files (each
one takes a real story's sentence count, then draws that many sentences from the whole pool), so
token statistics stay those of real stories. It is never written into the repository.

`run` prepares the corpus cold, each way in its own process, side by side:
  streaming   the product (`launch.data`), `--workers` tokenizer processes;
  in-memory   the pipeline it replaced, read from git (`launch/data.py` at --reference-commit):
              every story in one process, tokenized from Python lists;
  hf-map      nanoGPT's recipe: `datasets.load_dataset` + `.map(encode_ordinary_batch,
              num_proc=--workers)` + one memmap, as a yardstick;
and reports wall time, peak memory of the whole process tree (sampled every 0.25 s: RSS summed, an
upper bound that counts shared pages once per process, and PSS summed), the cache left on disk, a
cached launch, and the tokens/s the
loader serves at micro-batch 4 and 64 (ours against the in-memory version's row-by-row loader).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from .results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "tinystories"
SENTENCE_END = re.compile(r"(?<=[.!?\"])\s+")


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------
def real_stories(folder: Path) -> list[str]:
    stories = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            stories += [json.loads(line)["text"].strip() for line in f if line.strip()]
    if not stories:
        raise SystemExit(f"no TinyStories files (*.jsonl.gz) in {folder}; pass --from")
    return stories


def write_corpus(out: Path, stories: int, source: Path, seed: int = 0, per_file: int = 250_000) -> None:
    """`stories` synthetic stories as JSON lines, `per_file` to a file."""
    real = real_stories(source)
    pool = [s for story in real for s in SENTENCE_END.split(story) if s]
    shape = np.array([len(SENTENCE_END.split(story)) for story in real])
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, stories, per_file)):
        n = min(per_file, stories - start)
        counts = shape[rng.integers(0, len(shape), n)]
        picks = rng.integers(0, len(pool), int(counts.sum())).tolist()
        lines, at = [], 0
        for count in counts.tolist():
            lines.append(json.dumps({"text": " ".join(pool[i] for i in picks[at : at + count])}))
            at += count
        (out / f"stories-{index:03d}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"corpus: {start + n:,} / {stories:,} stories", flush=True)


# ---------------------------------------------------------------------------------------------
# Each way, in its own process
# ---------------------------------------------------------------------------------------------
STREAMING = """
import json, sys, time
from launch.settings.config import DataConfig
from launch.data.prepare import prepare_data
corpus, cache, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
p = prepare_data(DataConfig(source=corpus, max_samples=None, cache_dir=cache, workers=workers), log=lambda m: None)
print(json.dumps({"seconds": time.perf_counter() - start, "from_cache": p.from_cache,
                  "tokens": sum(len(s.tokens) for s in p.splits.values()), "cache": str(p.cache_dir)}))
"""

IN_MEMORY = """
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from gpt_core.tokenizer import Tokenizer
# the reference calls Tokenizer.encode_batch and reads Tokenizer.name, which gpt_core has since
# dropped: the same call and the same name, restored here
Tokenizer.encode_batch = lambda self, texts, num_threads=None: self.encoding.encode_ordinary_batch(
    texts, num_threads=num_threads or os.cpu_count() or 1)
Tokenizer.name = "gpt2"
from reference_launch.data import DataConfig, prepare_data
corpus, cache = sys.argv[1], sys.argv[2]
start = time.perf_counter()
p = prepare_data(DataConfig(source=corpus, max_samples=None, cache_dir=cache), log=lambda m: None)
print(json.dumps({"seconds": time.perf_counter() - start, "from_cache": p.from_cache,
                  "tokens": sum(len(s.tokens) for s in p.splits.values()), "cache": str(p.cache_dir)}))
"""

HF_MAP = """
import glob, json, os, sys, time
import numpy as np
corpus, cache, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
import datasets, tiktoken
from gpt_core import EOT_ID, get_tokenizer
datasets.disable_progress_bars()
ds = datasets.load_dataset("json", data_files=sorted(glob.glob(os.path.join(corpus, "*.jsonl"))), split="train",
                           cache_dir=os.path.join(cache, "hf"))

def tokenize(batch):
    ids = get_tokenizer().encoding.encode_ordinary_batch(batch["text"], num_threads=1)
    for row in ids:
        row.append(EOT_ID)
    return {"ids": ids, "len": [len(row) for row in ids]}

tokenized = ds.map(tokenize, batched=True, remove_columns=["text"], num_proc=workers)
total = int(np.sum(tokenized["len"], dtype=np.int64))
out = np.memmap(os.path.join(cache, "train.bin"), dtype=np.uint16, mode="w+", shape=(total,))
at = 0
for shard in range(64):
    part = tokenized.shard(64, shard, contiguous=True).with_format("numpy")
    batch = np.concatenate(part["ids"])
    out[at : at + len(batch)] = batch
    at += len(batch)
out.flush()
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": total}))
"""

SERVING = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
import reference_launch.data as before
import launch.data.batching as now
cache, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[4])
tokens = np.load(cache + "/train.tokens.npy", mmap_mode="r")
offsets = np.load(cache + "/train.offsets.npy", mmap_mode="r")
result = {}
for name, module in (("in-memory (row by row)", before), ("streaming (batched)", now)):
    ours = {"eot_id": 50256} if module is now else {}  # the old TokenSplit knew only GPT-2 BPE
    split = module.TokenSplit("train", tokens, offsets, **ours)
    loader = module.make_dataloader(module.PackedDataset(split, 256), batch, seed=0, shuffle=True, drop_last=True)
    iterator, served, start = iter(loader), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            x, y = next(iterator)
        except StopIteration:  # a small corpus: the next epoch
            iterator = iter(loader)
            continue
        served += x.numel()
    seconds = time.perf_counter() - start
    result[name] = {"tokens_per_s": served / seconds, "ms_per_batch": 1e3 * seconds * batch * 256 / served}
print(json.dumps(result))
"""


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over a process and its descendants. RSS counts the pages shared by several
    processes (torch's libraries, copy-on-write) in each of them: an upper bound. PSS splits them."""
    import psutil

    rss = pss = 0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            info = process.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
    except psutil.Error:
        pass
    return rss, pss


def measure(code: str, *args: str, env: dict | None = None) -> dict:
    """Run `code` in a fresh Python; its JSON result plus wall time and sampled peak RSS of its tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"bench step failed:\n{err[-3000:]}")
    return {
        **json.loads(out.strip().splitlines()[-1]),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak[0] / 2**20,
        "peak_pss_mb": peak[1] / 2**20,
    }


def reference_package(commit: str, into: Path) -> Path:
    """launch/{data,config,errors}.py as they were at `commit`, importable as `reference_launch`."""
    package = into / "reference_launch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("data.py", "config.py", "errors.py"):
        try:
            text = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{commit}:launch/{name}"], check=True, capture_output=True, text=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(
                f"cannot read launch/{name} at {commit} from git ({e}); run from a clone, or --skip-reference"
            ) from None
        (package / name).write_text(text)
    return into


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def run(
    corpus: Path,
    workers: int,
    commit: str,
    skip_reference: bool = False,
    skip_hf: bool = False,
    scratch: Path | None = None,
    serve_seconds: float = 5.0,
) -> dict:
    corpus = corpus.resolve()
    files = sorted(corpus.glob("*.jsonl"))
    result = {
        "corpus": str(corpus),
        "corpus_mb": sum(f.stat().st_size for f in files) / 2**20,
        "workers": workers,
        "cpus": os.cpu_count(),
        "prepare": {},
    }
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        tmp = Path(tmp)
        reference = reference_package(commit, tmp / "ref")
        ways = [("streaming", STREAMING, (str(corpus), str(tmp / "ours"), str(workers)))]
        if not skip_reference:
            ways.append(("in-memory", IN_MEMORY, (str(corpus), str(tmp / "before"), "0", str(reference))))
        if not skip_hf:
            (tmp / "hf-map").mkdir()
            ways.append(("hf-map", HF_MAP, (str(corpus), str(tmp / "hf-map"), str(workers))))
        for name, code, args in ways:
            print(f"bench: {name} preparation of {corpus.name}", flush=True)
            row = measure(code, *args)
            row["disk_mb"] = disk_mb(Path(args[1]))
            result["prepare"][name] = row
            print(
                f"bench:   {row['wall_s']:.0f} s, peak RSS {row['peak_rss_mb']:,.0f} MB, "
                f"PSS {row['peak_pss_mb']:,.0f} MB",
                flush=True,
            )
        ours = result["prepare"]["streaming"]
        cached = [measure(STREAMING, str(corpus), str(tmp / "ours"), str(workers)) for _ in range(3)]
        result["cached_launch_s"] = statistics.median(row["seconds"] for row in cached)
        result["serving"] = {
            batch: measure(SERVING, ours["cache"], str(batch), str(reference), str(serve_seconds)) for batch in (4, 64)
        }
    for row in result["prepare"].values():
        row["tokens_per_s"] = row["tokens"] / row["wall_s"]
        row["wall_vs_streaming"] = row["wall_s"] / ours["wall_s"]
    return result


def format_result(r: dict) -> str:
    lines = [
        f"corpus {r['corpus']} ({r['corpus_mb']:,.0f} MB of JSON lines), {r['workers']} workers, {r['cpus']} CPUs",
        f"{'cold preparation':<18} {'wall s':>8} {'tokens/s':>12} {'peak RSS MB':>12} {'peak PSS MB':>12} "
        f"{'disk MB':>9} {'vs streaming':>13}",
    ]
    for name, row in r["prepare"].items():
        lines.append(
            f"{name:<18} {row['wall_s']:>8.1f} {row['tokens_per_s']:>12,.0f} {row['peak_rss_mb']:>12,.0f} "
            f"{row['peak_pss_mb']:>12,.0f} "
            f"{row['disk_mb']:>9,.0f} {row['wall_vs_streaming']:>12.2f}x"
        )
    lines.append(f"cached launch: {r['cached_launch_s']:.2f} s in prepare_data (median of 3 fresh processes)")
    for batch, rows in r["serving"].items():
        lines.append(
            f"serving packed rows at batch {batch}: "
            + ", ".join(
                f"{name} {row['tokens_per_s']:,.0f} tokens/s ({row['ms_per_batch']:.3f} ms/batch)"
                for name, row in rows.items()
                if isinstance(row, dict) and "tokens_per_s" in row
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("corpus", help="write a synthetic corpus of real sentences")
    make.add_argument("out", type=Path)
    make.add_argument("--stories", type=int, default=1_000_000)
    make.add_argument("--from", dest="source", type=Path, default=SHARED)
    make.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("run", help="prepare a corpus each way and compare")
    bench.add_argument("corpus", type=Path)
    bench.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    bench.add_argument("--reference-commit", default="a377509", help="the in-memory pipeline's commit")
    bench.add_argument("--skip-reference", action="store_true")
    bench.add_argument("--skip-hf", action="store_true")
    bench.add_argument("--scratch", type=Path, default=None, help="folder for the caches [default: the system's temp]")
    bench.add_argument("--serve-seconds", type=float, default=5.0, help="how long each loader is timed")
    bench.add_argument("--json-out", type=Path, default=None)
    bench.add_argument(
        "--save", action="store_true", help="keep the result in benchmarks/results/ (named by the corpus)"
    )
    args = parser.parse_args()
    if args.command == "corpus":
        write_corpus(args.out, args.stories, args.source, args.seed)
        return
    result = run(
        args.corpus,
        args.workers,
        args.reference_commit,
        args.skip_reference,
        args.skip_hf,
        args.scratch,
        args.serve_seconds,
    )
    print(format_result(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    if args.save:
        print(f"saved in {write_result(f'data_pipeline-{args.corpus.name}', result)}")


if __name__ == "__main__":
    main()
