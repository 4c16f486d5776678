import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_tinystories():
    if not SHARED_TINYSTORIES.is_dir():
        pytest.skip(f"real TinyStories files not found at {SHARED_TINYSTORIES}")
    return SHARED_TINYSTORIES


def run_cli(args, cwd=None, env=None, timeout=600, check=True):
    """Run a real process (the CLI, a recipe or `accelerate launch`) and return it finished."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc
