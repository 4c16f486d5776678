"""The training loop, run for real: the recipe's smoke run, resume, early stopping, trackers."""

import json
import math

import pytest

from gpt_core import load_pretrained
from launch.train import TrainConfig, lr_at
from launch.errors import UserError
from tests.conftest import PYTHON, run_cli

pytestmark = pytest.mark.slow


def tiny_run(out, *extra, env=None, check=True):
    """A fast CPU run of the CLI: tiny model on the shipped smoke stories."""
    args = [PYTHON, "-m", "launch.cli", "train", "--smoke", "--preset", "tiny", "--output-dir", str(out),
            "--data-cache", str(out.parent / "cache"), "--sample-tokens", "8", *extra]
    return run_cli(args, env=env, check=check)


def records(run_dir, kind):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(l)["kind"] == kind]


def test_schedule_warms_up_then_anneals():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx(5e-4)
    assert lr_at(100, cfg, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("bad, words", [
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"lr": -1.0}, "--lr must be positive"),
    ({"tracker": "mlflow"}, "--tracker must be one of"),
    ({"grad_accum": 0}, "--grad-accum must be >= 1"),
])
def test_bad_training_configs(bad, words):
    with pytest.raises(UserError, match=words):
        TrainConfig(**bad)


def test_recipe_smoke_run_end_to_end(tmp_path):
    """`accelerate launch recipes/tinystories.py --smoke`: every stage leaves its artefact."""
    out = tmp_path / "smoke"
    proc = run_cli(["accelerate", "launch", "--config_file", "launch/cpu.yaml", "recipes/tinystories.py", "--smoke",
                    "--output-dir", str(out), "--data-cache", str(tmp_path / "cache")])
    assert "data: train" in proc.stdout and "test (best weights" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] in ("completed", "early stopping: no validation improvement in 3 evaluations")
    assert summary["model"]["preset"] == "small" and summary["hardware"]["processes"] == 1
    assert math.isfinite(summary["test"]["perplexity"]) and summary["test"]["tokens"] > 0
    assert summary["test"]["perplexity"] == pytest.approx(math.exp(summary["test"]["loss"]))
    assert [s["prompt"] for s in summary["samples"]] == ["Once upon a time", "The little girl", "In a magical forest",
                                                         "The brave knight"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train = records(out, "train")
    evals = records(out, "eval")
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, "the smoke run should visibly learn"
    assert any(e["epoch_end"] for e in evals) and len(records(out, "test")) == 1
    best = load_pretrained(out / "checkpoints" / "best")  # gpt_core alone, no Accelerate
    assert best.num_params() == summary["model"]["parameters"]
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert 1 <= len(steps) <= 2 and all((s / "state").is_dir() and (s / "model.safetensors").is_file() for s in steps)
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_resume_continues_exactly(tmp_path):
    """An interrupted run, resumed, logs the same losses as an uninterrupted one (CPU, same seed)."""
    common = ["--max-steps", "12", "--log-every", "1", "--eval-every", "4", "--epochs", "8"]
    tiny_run(tmp_path / "straight", *common)
    paused = tiny_run(tmp_path / "resumed", *common, "--stop-after-steps", "5")
    assert "paused at step 5" in paused.stdout + paused.stderr
    assert not (tmp_path / "resumed" / "summary.json").exists()
    resumed = tiny_run(tmp_path / "resumed", *common, "--resume", "auto")
    assert "resume: " in resumed.stdout and "step 5" in resumed.stdout
    straight, again = records(tmp_path / "straight", "train"), records(tmp_path / "resumed", "train")
    assert [r["step"] for r in again] == list(range(1, 13))
    assert [r["loss"] for r in again] == [r["loss"] for r in straight]  # bit for bit
    assert [r["lr"] for r in again] == [r["lr"] for r in straight]
    assert records(tmp_path / "resumed", "eval") == records(tmp_path / "straight", "eval")
    assert records(tmp_path / "resumed", "test") == records(tmp_path / "straight", "test")


def test_resume_mid_epoch_lands_on_the_next_batch(tmp_path):
    # 7 micro-batches per epoch, accumulation 2: a pause after step 2 is 4 batches into epoch 1
    common = ["--max-steps", "6", "--log-every", "1", "--grad-accum", "2", "--epochs", "3"]
    tiny_run(tmp_path / "straight", *common)
    tiny_run(tmp_path / "resumed", *common, "--stop-after-steps", "2")
    state = json.loads(next((tmp_path / "resumed" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["batch_in_epoch"] > 0 and state["epoch"] == 0
    tiny_run(tmp_path / "resumed", *common, "--resume", "auto")
    assert [r["loss"] for r in records(tmp_path / "resumed", "train")] == [r["loss"] for r in records(tmp_path / "straight", "train")]


def test_early_stopping_after_patience_evaluations(tmp_path):
    # An lr so small that validation loss cannot improve: the first evaluation is the best.
    proc = tiny_run(tmp_path / "run", "--lr", "1e-12", "--patience", "2", "--eval-every", "1", "--max-steps", "30",
                    "--log-every", "1")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "early stopping: no validation improvement in 2 evaluations"
    evals = records(tmp_path / "run", "eval")
    assert len(evals) == 3 and summary["steps"] == 3 and summary["best_step"] == 1
    assert "early stopping" in proc.stdout


def test_wandb_offline_run_holds_the_metrics_and_no_secret(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": secret, "WANDB_SILENT": "true"}
    tiny_run(tmp_path / "run", "--tracker", "wandb", "--max-steps", "4", "--log-every", "1", "--log-checkpoint", env=env)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"train/loss", b"train/tokens_per_s", b"eval/perplexity", b"test/accuracy", b"samples", b"curves",
                b"throughput_tokens_per_s", b"parameters", b"run-best"):
        assert key in data, key
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_tensorboard_tracker_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_run(tmp_path / "run", "--tracker", "tensorboard", "--max-steps", "4", "--log-every", "1")
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(acc.Scalars("train/loss")) == 4
