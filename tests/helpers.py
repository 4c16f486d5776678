"""What the tests share: paths, a story generator, and running the real CLI in a subprocess."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from launch.runtime.processes import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED_TINYSTORIES = (REPO.parent / "shared" / "data" / "tinystories").resolve()
PYTHON = sys.executable

# The small preset keeps the paper's dropout (0.1): every resume compared with this run must be
# exact with dropout on. 7 micro-batches per epoch at batch 2, so 4 optimizer steps an epoch.
REFERENCE = [
    "--preset",
    "small",
    "--max-steps",
    "12",
    "--epochs",
    "8",
    "--log-every",
    "1",
    "--save-every",
    "2",
    "--eval-every",
    "4",
]
STORY_RUN = ("--max-steps", "8", "--eval-every", "2", "--log-every", "1")  # conftest's story_run
# conftest's llama_run: a Llama-style tiny model (--model-config llama_config()) trained with Muon
LLAMA_RUN = ("--optimizer", "muon", "--muon-lr", "0.03", "--lr", "3e-3", "--warmup-steps", "2", *STORY_RUN)
WANDB_SECRET = "0123456789abcdef0123456789abcdef01234567"  # shaped like a W&B API key


def llama_config(folder: Path) -> Path:
    """`llama-small` at the tiny preset's size (two query heads sharing one key/value head), as a
    --model-config file in `folder`."""
    from gpt_core import get_preset

    shape = {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "d_model": 32, "d_ff": 86, "context_length": 32}
    path = Path(folder) / "llama.json"
    path.write_text(json.dumps(get_preset("llama-small").replace(**shape).to_dict()))
    return path


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
    """The tiny run in a process of its own: for what needs one (signals, kills, resource limits)."""
    return run_cli(train_args(out, *extra), env=env, check=check, **kwargs)


def invoke(*args, env=None, check=False, input=None, command=None):
    """A `gpt-launch` command in this process, through click's CliRunner: what a real process would
    print and exit with, without an interpreter's and torch's start-up (~3 s) per command."""
    from accelerate.state import AcceleratorState, GradientState
    from click.testing import CliRunner

    from launch.cli import cli

    # Accelerate keeps its state in process-wide singletons: each command starts as a fresh process would.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    result = CliRunner().invoke(command or cli, [str(a) for a in args], env=env, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug, not a user error: keep its traceback
    if check and result.exit_code != 0:
        raise AssertionError(f"{args} exited {result.exit_code}\n{result.output[-4000:]}\n{result.stderr[-4000:]}")
    return result


def train_here(out: Path, *extra, env=None, check=True):
    """The tiny run (tiny_run_options) in this process."""
    return invoke("train", *tiny_run_options(out, *extra), env=env, check=check)


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def outcome(run_dir: Path) -> list[dict]:
    """Everything a run logged that an interrupted and resumed run must repeat: each training record
    (loss, lr, gradient norm, tokens, skipped updates), evaluation and test; not the wall-clock speed."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def deepspeed_run(
    config: str, out: Path, *extra, processes: int = 2, script: str = "recipes/tinystories.py"
) -> list[str]:
    """`accelerate launch` of the tiny smoke recipe under a shipped DeepSpeed config, as it ships (bf16)."""
    launcher = ["accelerate", "launch", "--config_file", config, "--num_processes", str(processes)]
    return [
        *launcher,
        "--main_process_port",
        str(free_port()),
        script,
        *tiny_run_options(out, "--max-steps", "4", *extra),
    ]


def launch_two(*flags: str, precision: str = "no") -> list[str]:
    """`accelerate launch` of two CPU processes. On a free port unless `flags` name one: Accelerate's
    default, 29500, may still be held by the previous test's processes as they exit."""
    port = [] if "--main_process_port" in flags else ["--main_process_port", str(free_port())]
    return [
        "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--mixed_precision",
        precision,
        *port,
        *flags,
    ]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256): equal digests mean nothing was written."""
    import hashlib

    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
