"""Runs the suite shares. Each is trained once per session (per worker); tests that change one work
on a copy. The suite runs in parallel (pytest-xdist, `-n auto` in setup.cfg), each worker and the
processes it starts on one thread, so that the workers share the cores instead of taking turns."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch is imported, here and in every child process
    os.environ["OMP_NUM_THREADS"] = "1"

import shutil

import pytest

from launch.settings.config import SMOKE_DATA
from tests.helpers import (
    LLAMA_RUN,
    REFERENCE,
    SHARED_TINYSTORIES,
    STORY_RUN,
    WANDB_SECRET,
    invoke,
    llama_config,
    outcome,
    tiny_run,
    train_here,
)


def pytest_xdist_auto_num_workers(config):
    """A worker per core this process may use, and one more: much of a test's time is spent waiting
    (for a process to start or stop, a timeout, the disk), which the extra worker fills. On 2 cores,
    3 workers ran the suite in 6:46, 2 in 8:08. At most 8: past that, the runs each worker trains for
    itself cost more than the parallelism gives back."""
    return min(8, len(os.sched_getaffinity(0)) + 1)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_tinystories():
    if not SHARED_TINYSTORIES.is_dir():
        pytest.skip(f"real TinyStories files not found at {SHARED_TINYSTORIES}")
    return SHARED_TINYSTORIES


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """REFERENCE run straight through: what every interrupted and resumed run must equal."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_here(out, *REFERENCE)
    return out


@pytest.fixture(scope="session")
def paused_run(tmp_path_factory):
    """A tiny run paused at step 4 of 8: a best checkpoint and step checkpoints to resume from."""
    out = tmp_path_factory.mktemp("paused") / "run"
    train_here(out, "--max-steps", "8", "--eval-every", "2", "--stop-after-steps", "4")
    return out


@pytest.fixture(scope="session")
def finished_run(paused_run, tmp_path_factory):
    """The paused run resumed to its end: summary, curves, samples and checkpoints."""
    out = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(paused_run, out)
    train_here(out, "--max-steps", "8", "--eval-every", "2", "--resume", "auto")
    return out


@pytest.fixture(scope="session")
def wandb_offline_run(tmp_path_factory):
    """A finished tiny run logged to W&B offline, as a user without a network makes one, with a key in
    the environment (it must end up nowhere) and the best checkpoint logged as an artifact."""
    out = tmp_path_factory.mktemp("wandb") / "run"
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": WANDB_SECRET, "WANDB_SILENT": "true"}
    tiny_run(out, "--tracker", "wandb", "--max-steps", "4", "--log-every", "1", "--log-checkpoint", env=env)
    return out


@pytest.fixture(scope="session")
def story_tokenizer(tmp_path_factory):
    """A 512-token BPE trained on the shipped smoke stories, by the CLI: its folder."""
    out = tmp_path_factory.mktemp("tokenizer") / "story-512"
    cache = out.parent / "cache"
    invoke(
        "tokenizer",
        "train",
        "--data",
        SMOKE_DATA,
        "--data-cache",
        cache,
        "--vocab-size",
        512,
        "--output",
        out,
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def story_run(story_tokenizer, tmp_path_factory):
    """A tiny run with story_tokenizer, paused at step 4 and resumed to its end without the flag."""
    out = tmp_path_factory.mktemp("story") / "run"
    train_here(out, "--tokenizer", story_tokenizer, *STORY_RUN, "--stop-after-steps", "4")
    train_here(out, *STORY_RUN, "--resume", "auto")
    return out


@pytest.fixture(scope="session")
def llama_run(story_tokenizer, tmp_path_factory):
    """A Llama-style tiny model (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) trained
    straight through with Muon and story_tokenizer."""
    root = tmp_path_factory.mktemp("llama")
    train_here(root / "run", "--model-config", llama_config(root), "--tokenizer", story_tokenizer, *LLAMA_RUN)
    return root / "run"


@pytest.fixture(scope="session")
def straight(reference_run):
    """Everything the uninterrupted run logged: losses, learning rates, gradient norms, tokens,
    evaluations and the test result (outcome)."""
    return outcome(reference_run)
