"""What the tests share: paths, a story generator, and running the real CLI in a subprocess."""

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_TINYSTORIES = (REPO.parent / "shared" / "data" / "tinystories").resolve()
PYTHON = sys.executable


def make_stories(n: int, seed: int = 0) -> list[str]:
    """Deterministic, distinct short stories for tests that must not depend on ../shared."""
    names = ["Lily", "Tom", "Ben", "Mia", "Sam", "Zoe", "Max", "Ann"]
    things = ["ball", "kite", "cake", "boat", "hat", "book", "drum", "cup"]
    out = []
    for i in range(n):
        a, b = names[(i + seed) % 8], things[(i * 3 + seed) % 8]
        out.append(f"Story {i}. {a} had a {b}. {a} played with the {b} all day and was happy. The end.")
    return out


def write_jsonl(path: Path, stories, gz: bool = False) -> Path:
    text = "".join(json.dumps({"text": s}) + "\n" for s in stories)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def child_env(env=None) -> dict:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }


def run_cli(args, cwd=None, env=None, timeout=600, check=True, **kwargs):
    """Run a real process (the CLI, a recipe or `accelerate launch`) and return it finished."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd or REPO,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
        )
    return proc


def tiny_run_options(out: Path, *extra) -> list[str]:
    """The options of a fast CPU run: the tiny model on the shipped smoke stories, cache beside `out`."""
    return [
        "--smoke",
        "--preset",
        "tiny",
        "--output-dir",
        str(out),
        "--data-cache",
        str(Path(out).parent / "cache"),
        "--sample-tokens",
        "8",
        *map(str, extra),
    ]


def train_args(out: Path, *extra) -> list[str]:
    """`gpt-launch train` (as `python -m launch.cli`) with tiny_run_options."""
    return [PYTHON, "-m", "launch.cli", "train", *tiny_run_options(out, *extra)]


def tiny_run(out: Path, *extra, env=None, check=True, **kwargs):
    return run_cli(train_args(out, *extra), env=env, check=check, **kwargs)


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*flags: str) -> list[str]:
    """`accelerate launch` of two CPU processes. On a free port unless `flags` name one: Accelerate's
    default, 29500, may still be held by the previous test's processes as they exit."""
    port = [] if "--main_process_port" in flags else ["--main_process_port", str(free_port())]
    return ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no", *port, *flags]
