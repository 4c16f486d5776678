"""The training loop: its small state objects in-process, then the loop run for real (smoke recipe,
exact resume with dropout on, a run that remembers its settings, early stopping, trackers)."""

import json
import math
import time

import pytest
import torch

from gpt_core import load_pretrained
from launch.config import TrainConfig
from launch.train import EarlyStopping, LossWindow, TrainerState, lr_at
from tests.helpers import losses, records, run_cli, tiny_run, tiny_run_options


# ---- in-process: the pieces of the loop --------------------------------------------------------
@pytest.fixture(scope="module")
def accelerator():
    from launch.runtime import make_accelerator

    return make_accelerator(cpu=True)


def test_schedule_warms_up_then_anneals():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx(5e-4)
    assert lr_at(100, cfg, 100) == pytest.approx(0.0, abs=1e-12)


def test_trainer_state_round_trips_and_reads_older_checkpoints():
    state = TrainerState(step=7, epoch=1, batch_in_epoch=3, tokens=900, finished=None)
    again = TrainerState()
    again.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert again == state
    old = {"step": 4, "epoch": 0, "batch_in_epoch": 8, "tokens": 512, "best_val_loss": 3.0, "resumed_from": None}
    again.load_state_dict(old)  # a checkpoint from before `finished` existed
    assert (again.step, again.tokens, again.finished) == (4, 512, None)


def test_early_stopping_counts_evaluations_without_improvement(accelerator):
    early = EarlyStopping(patience=2)
    assert early.update({"loss": 3.0}, step=10) is True
    assert early.update({"loss": 2.5}, step=20) is True and early.best_step == 20
    assert early.update({"loss": 2.6}, step=30) is False and not early.should_stop(accelerator)
    assert early.update({"loss": 2.5}, step=40) is False  # equal is not better
    assert early.should_stop(accelerator)
    accelerator.check_trigger()  # the trigger is read once; leave it clear for other tests
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(json.loads(json.dumps(early.state_dict())))
    assert restored == early
    restored.load_state_dict({"step": 3})  # a checkpoint saved before any evaluation
    assert restored.best_val_loss is None and restored.evals_without_improvement == 0


def test_loss_window_means_over_micro_batches_and_restarts(accelerator):
    window = LossWindow(torch.device("cpu"), tokens=100)
    for loss in (2.0, 4.0, 6.0):
        window.add(torch.tensor(loss))
    mean, tokens_per_s = window.read(accelerator, tokens=400)
    assert mean == pytest.approx(4.0) and tokens_per_s > 0
    window.add(torch.tensor(1.0))
    assert window.read(accelerator, tokens=500)[0] == pytest.approx(1.0)


def test_loss_window_leaves_paused_time_out_of_tokens_per_s(accelerator):
    window = LossWindow(torch.device("cpu"), tokens=0)
    time.sleep(0.05)
    with window.paused():  # an evaluation or a checkpoint: not training time
        time.sleep(0.5)
    window.add(torch.tensor(1.0))
    _, tokens_per_s = window.read(accelerator, tokens=1000)
    assert tokens_per_s > 1000 / 0.4  # the 0.5 s pause would have made it under 1000 / 0.55


# ---- the loop, run for real ---------------------------------------------------------------------
@pytest.mark.slow
def test_recipe_smoke_run_end_to_end(tmp_path):
    """`accelerate launch recipes/tinystories.py --smoke`: every stage leaves its artefact."""
    out = tmp_path / "smoke"
    proc = run_cli(
        [
            "accelerate",
            "launch",
            "--config_file",
            "launch/cpu.yaml",
            "recipes/tinystories.py",
            "--smoke",
            "--output-dir",
            out,
            "--data-cache",
            tmp_path / "cache",
        ]
    )
    assert "data: train" in proc.stdout and "test (best weights" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] in ("completed", "early stopping: no validation improvement in 3 evaluations")
    assert summary["model"]["preset"] == "small" and summary["hardware"]["processes"] == 1
    assert math.isfinite(summary["test"]["perplexity"]) and summary["test"]["tokens"] > 0
    assert summary["test"]["perplexity"] == pytest.approx(math.exp(summary["test"]["loss"]))
    assert [s["prompt"] for s in summary["samples"]] == [
        "Once upon a time",
        "The little girl",
        "In a magical forest",
        "The brave knight",
    ]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train, evals = records(out, "train"), records(out, "eval")
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, "the smoke run should visibly learn"
    assert any(e["epoch_end"] for e in evals) and len(records(out, "test")) == 1
    best = load_pretrained(out / "checkpoints" / "best")  # gpt_core alone, no Accelerate
    assert best.num_params() == summary["model"]["parameters"]
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert 1 <= len(steps) <= 2 and all((s / "state").is_dir() and (s / "model.safetensors").is_file() for s in steps)
    # the weights are stored once per checkpoint: Accelerate's own copy is not written
    assert not [
        p for s in steps for p in (s / "state").iterdir() if p.suffix in (".safetensors", ".bin") and "model" in p.name
    ]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    # noise that is ours to silence
    for noise in ("Removed shared tensor", "Setting accelerator to CPU"):
        assert noise not in proc.stdout + proc.stderr


# The paper's dropout (0.1) is on: resume equality must not depend on dropout being off.
RESUME = ["--preset", "small", "--max-steps", "12", "--log-every", "1", "--eval-every", "4", "--epochs", "8"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    tiny_run(out, *RESUME)
    return out


@pytest.mark.slow
def test_resume_with_dropout_continues_bit_for_bit(tmp_path, straight):
    """A paused run resumed with nothing but `--resume auto --output-dir`: the run's own settings
    come back, and it logs the same losses, lr, evaluations and test as one that never stopped."""
    out = tmp_path / "resumed"
    paused = tiny_run(out, *RESUME, "--stop-after-steps", "5")
    assert "paused at step 5" in paused.stdout + paused.stderr
    assert not (out / "summary.json").exists()
    # No --data or --preset: with the hub unreachable, only the saved settings can make this work.
    resumed = run_cli(["gpt-launch", "train", "--resume", "auto", "--output-dir", out], env={"HF_HUB_OFFLINE": "1"})
    assert "resume: " in resumed.stdout and "step 5" in resumed.stdout
    assert json.loads((out / "summary.json").read_text())["model"]["dropout"] == 0.1
    again, first = records(out, "train"), records(straight, "train")
    assert [r["step"] for r in again] == list(range(1, 13))
    assert [r["loss"] for r in again] == [r["loss"] for r in first]  # bit for bit
    assert [r["lr"] for r in again] == [r["lr"] for r in first]
    assert records(out, "eval") == records(straight, "eval")
    assert records(out, "test") == records(straight, "test")


@pytest.mark.slow
def test_resume_mid_epoch_lands_on_the_next_batch(tmp_path, straight):
    # 7 micro-batches per epoch, accumulation 2: a pause after step 2 is 4 batches into epoch 1
    out = tmp_path / "resumed"
    tiny_run(out, *RESUME, "--stop-after-steps", "2")
    state = json.loads(next((out / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["batch_in_epoch"] > 0 and state["epoch"] == 0
    tiny_run(out, *RESUME, "--resume", "auto")
    assert losses(out) == losses(straight)


@pytest.mark.slow
def test_resume_refuses_changes_that_break_exact_continuation(tmp_path, straight):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for ckpt in sorted((run / "checkpoints").glob("step-*"))[1:]:  # an unfinished run: its first checkpoint only
        shutil.rmtree(ckpt)
    saved = (run / "train_config.json").read_text()
    refused = run_cli(
        ["gpt-launch", "train", "--resume", "auto", "--output-dir", run, "--batch-size", "3", "--seed", "9"],
        check=False,
    )
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-2000:]
    assert "--batch-size 2 -> 3" in errors[0] and "--seed 1234 -> 9" in errors[0] and "--allow-changes" in errors[0]
    assert (run / "train_config.json").read_text() == saved, "a refused resume must not overwrite the settings"
    allowed = run_cli(
        [
            "gpt-launch",
            "train",
            "--resume",
            "auto",
            "--output-dir",
            run,
            "--lr",
            "0.001",
            "--batch-size",
            "3",
            "--allow-changes",
        ]
    )
    assert "resume: warning: --lr 0.003 -> 0.001" in allowed.stdout and "--batch-size 2 -> 3" in allowed.stdout
    assert json.loads((run / "train_config.json").read_text())["lr"] == 0.001


@pytest.mark.slow
def test_resume_of_a_finished_run_says_it_is_complete(tmp_path, straight):
    before = (straight / "metrics.jsonl").read_text()
    proc = run_cli(["gpt-launch", "train", "--resume", "auto", "--output-dir", straight])
    assert "is complete (completed" in proc.stdout and "nothing to do" in proc.stdout
    assert (straight / "metrics.jsonl").read_text() == before, "no step 13, no extra evaluation"


@pytest.mark.slow
def test_checkpoints_once_per_step_and_a_capped_test(tmp_path):
    # --save-every 4 coincides with the end at step 8: one save; the test is capped at one batch.
    out = tmp_path / "run"
    proc = tiny_run(out, "--max-steps", "8", "--save-every", "4", "--test-batches", "1", "--batch-size", "2")
    saves = [line for line in proc.stdout.splitlines() if line.startswith("checkpoint: ")]
    assert [s.split()[1].rsplit("/", 1)[1] for s in saves] == ["step-0000004", "step-0000008"], saves
    assert "first 1 batches per process" in proc.stdout
    assert records(out, "test")[0]["tokens"] == 2 * 32  # one batch of 2 rows x context 32
    assert "test:" in proc.stderr  # the final evaluation shows a progress bar


@pytest.mark.slow
def test_early_stopping_after_patience_evaluations(tmp_path):
    # An lr so small that validation loss cannot improve: the first evaluation is the best.
    out = tmp_path / "run"
    proc = tiny_run(
        out, "--lr", "1e-12", "--patience", "2", "--eval-every", "1", "--max-steps", "30", "--log-every", "1"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "early stopping: no validation improvement in 2 evaluations"
    assert len(records(out, "eval")) == 3 and summary["steps"] == 3 and summary["best_step"] == 1
    assert "early stopping" in proc.stdout


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_and_no_secret(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": secret, "WANDB_SILENT": "true"}
    out = tmp_path / "run"
    tiny_run(out, "--tracker", "wandb", "--max-steps", "4", "--log-every", "1", "--log-checkpoint", env=env)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (
        b"train/loss",
        b"train/tokens_per_s",
        b"eval/perplexity",
        b"test/accuracy",
        b"samples",
        b"curves",
        b"throughput_tokens_per_s",
        b"parameters",
        b"run-best",
    ):
        assert key in data, key
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_readme_wandb_offline_command_works_offline(tmp_path):
    """README's offline W&B example, as written (plus a cache and output folder of the test's own)."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    run_cli(
        [
            "accelerate",
            "launch",
            "--config_file",
            "launch/cpu.yaml",
            "recipes/tinystories.py",
            "--smoke",
            "--tracker",
            "wandb",
            *tiny_run_options(out, "--max-steps", "2")[1:],
        ],
        env=env,
    )
    assert list((out / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_tensorboard_tracker_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_run(tmp_path / "run", "--tracker", "tensorboard", "--max-steps", "4", "--log-every", "1")
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(acc.Scalars("train/loss")) == 4
