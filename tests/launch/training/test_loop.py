"""The training loop run for real: smoke recipe with W&B offline, exact resume with dropout on, a run
that remembers its settings, early stopping, trackers. Runs that need no process of their own run in
this one (tests.helpers.train_here); the loop's state objects are tested in test_state.py."""

import json
import math
from pathlib import Path

import pytest

from gpt_core import load_pretrained, load_tokenizer
from launch.checkpoints.restoring import read_trainer_state
from launch.settings.config import SMOKE_DATA, DataConfig
from tests.faults import (
    one_error_line,
    train,
)
from tests.helpers import (
    REFERENCE,
    REPO,
    STORY_RUN,
    WANDB_SECRET,
    invoke,
    losses,
    outcome,
    records,
    run_cli,
    train_here,
)


# ---- the loop, run for real ---------------------------------------------------------------------
@pytest.mark.slow
def test_recipe_smoke_run_end_to_end_with_wandb_offline(tmp_path):
    """README's commands as written: `accelerate launch recipes/tinystories.py --smoke`, here with
    README's offline W&B tracker and no hub: every stage leaves its artefact."""
    out = tmp_path / "smoke"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    proc = run_cli(
        [
            "accelerate",
            "launch",
            "--config_file",
            "launch/configs/cpu.yaml",
            "recipes/tinystories.py",
            "--smoke",
            "--tracker",
            "wandb",
            "--output-dir",
            out,
            "--data-cache",
            tmp_path / "cache",
        ],
        env=env,
    )
    assert "data: train" in proc.stdout and "test (best weights" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] in ("completed", "early stopping: no validation improvement in 3 evaluations")
    assert summary["model"]["preset"] == "small" and summary["hardware"]["processes"] == 1
    assert math.isfinite(summary["test"]["perplexity"]) and summary["test"]["tokens"] > 0
    assert summary["test"]["perplexity"] == pytest.approx(math.exp(summary["test"]["loss"]))
    prompts = ["Once upon a time", "The little girl", "In a magical forest", "The brave knight"]
    assert [s["prompt"] for s in summary["samples"]] == prompts
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train, evals = records(out, "train"), records(out, "eval")
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, "the smoke run should visibly learn"
    assert any(e["epoch_end"] for e in evals) and len(records(out, "test")) == 1
    best = load_pretrained(out / "checkpoints" / "best")  # gpt_core alone, no Accelerate
    assert best.num_params() == summary["model"]["parameters"]
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert 1 <= len(steps) <= 2 and all((s / "state").is_dir() and (s / "model.safetensors").is_file() for s in steps)
    # the weights are stored once per checkpoint: Accelerate's own copy is not written
    state_files = [p for s in steps for p in (s / "state").iterdir()]
    assert not [p for p in state_files if p.suffix in (".safetensors", ".bin") and "model" in p.name]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert list((out / "wandb").glob("offline-run-*"))
    # noise that is ours to silence
    for noise in ("Removed shared tensor", "Setting accelerator to CPU"):
        assert noise not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_checkpoint_state_is_kept_per_component_and_a_flat_one_from_before_still_resumes(
    tmp_path, paused_run, finished_run
):
    """trainer_state.json holds each lasting component's state under its own key. A checkpoint
    written before that (flat_trainer_state.json: this paused run's step 4, as the earlier code wrote
    it) resumes, and the run ends logging what the uninterrupted resume logged."""
    import shutil

    step = paused_run / "checkpoints" / "step-0000004"
    nested = json.loads((step / "trainer_state.json").read_text())
    assert set(nested) == {"trainer", "early_stopping"} and nested["trainer"]["step"] == 4
    flat = json.loads((Path(__file__).parent / "flat_trainer_state.json").read_text())
    assert set(flat) == set(nested["trainer"]) | set(nested["early_stopping"])  # every key, side by side
    assert {k: flat[k] for k in ("step", "epoch", "batch_in_epoch", "tokens")} == {
        k: nested["trainer"][k] for k in ("step", "epoch", "batch_in_epoch", "tokens")
    }
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    (run / "checkpoints" / "step-0000004" / "trainer_state.json").write_text(json.dumps(flat))
    train_here(run, "--max-steps", "8", "--eval-every", "2", "--resume", "auto")  # as finished_run was resumed
    assert outcome(run) == outcome(finished_run)


def test_resume_with_dropout_continues_bit_for_bit(tmp_path, reference_run, monkeypatch):
    """A paused run resumed with nothing but `--resume auto --output-dir`: the run's own settings
    come back, and it logs the same losses, lr, evaluations and test as one that never stopped."""
    out = tmp_path / "resumed"
    paused = train_here(out, *REFERENCE, "--stop-after-steps", "5")
    assert "paused at step 5" in paused.stdout + paused.stderr
    assert not (out / "summary.json").exists()
    # No --data or --preset: with the hub unreachable, only the saved settings can make this work.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resumed = invoke("train", "--resume", "auto", "--output-dir", out, check=True)
    assert "resume: " in resumed.stdout and "step 5" in resumed.stdout
    assert json.loads((out / "summary.json").read_text())["model"]["dropout"] == 0.1
    again, first = records(out, "train"), records(reference_run, "train")
    assert [r["step"] for r in again] == list(range(1, 13))
    assert [r["loss"] for r in again] == [r["loss"] for r in first]  # bit for bit
    assert [r["lr"] for r in again] == [r["lr"] for r in first]
    assert records(out, "eval") == records(reference_run, "eval")
    assert records(out, "test") == records(reference_run, "test")


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_losses_bit_for_bit(tmp_path, reference_run):
    out = tmp_path / "run"
    train_here(out, *REFERENCE, "--activation-checkpointing")  # dropout 0.1: its masks must be drawn again alike
    assert losses(out) == losses(reference_run)
    assert records(out, "eval") == records(reference_run, "eval")


@pytest.mark.slow
def test_resume_mid_epoch_lands_on_the_next_batch(tmp_path, reference_run):
    # 7 micro-batches per epoch, accumulation 2: a pause after step 2 is 4 batches into epoch 1
    out = tmp_path / "resumed"
    train_here(out, *REFERENCE, "--stop-after-steps", "2")
    state = read_trainer_state(next((out / "checkpoints").glob("step-*")))
    assert state["batch_in_epoch"] == 4 and state["epoch"] == 0
    train_here(out, *REFERENCE, "--resume", "auto")
    assert losses(out) == losses(reference_run)


def test_resume_refuses_changes_that_break_exact_continuation(tmp_path, paused_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    saved = (run / "train_config.json").read_text()
    refused = invoke("train", "--resume", "auto", "--output-dir", run, "--batch-size", "3", "--seed", "9")
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert refused.exit_code == 2 and len(errors) == 1, refused.stderr[-2000:]
    assert "--batch-size 2 -> 3" in errors[0] and "--seed 1234 -> 9" in errors[0] and "--allow-changes" in errors[0]
    assert (run / "train_config.json").read_text() == saved, "a refused resume must not overwrite the settings"
    allowed = invoke(
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
        check=True,
    )
    assert "resume: warning: --lr 0.003 -> 0.001" in allowed.stdout and "--batch-size 2 -> 3" in allowed.stdout
    assert json.loads((run / "train_config.json").read_text())["lr"] == 0.001


def test_resume_of_a_finished_run_says_it_is_complete(finished_run):
    before = (finished_run / "metrics.jsonl").read_text()
    result = invoke("train", "--resume", "auto", "--output-dir", finished_run, check=True)
    assert "is complete (completed" in result.stdout and "nothing to do" in result.stdout
    assert (finished_run / "metrics.jsonl").read_text() == before, "no step 9, no extra evaluation"


def test_checkpoints_once_per_step_and_a_capped_test(tmp_path):
    # --save-every 4 coincides with the end at step 8: one save; the test is capped at one batch.
    out = tmp_path / "run"
    result = train_here(out, "--max-steps", "8", "--save-every", "4", "--test-batches", "1", "--batch-size", "2")
    saves = [line for line in result.stdout.splitlines() if line.startswith("checkpoint: ")]
    assert [s.split()[1].rsplit("/", 1)[1] for s in saves] == ["step-0000004", "step-0000008"], saves
    assert "first 1 batches per process" in result.stdout
    assert records(out, "test")[0]["tokens"] == 2 * 32  # one batch of 2 rows x context 32
    assert "test: 1/1 batch" in result.stderr  # the final evaluation shows its progress


def test_early_stopping_after_patience_evaluations(tmp_path):
    # An lr so small that validation loss cannot improve: the first evaluation is the best.
    out = tmp_path / "run"
    result = train_here(
        out, "--lr", "1e-12", "--patience", "2", "--eval-every", "1", "--max-steps", "30", "--log-every", "1"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "early stopping: no validation improvement in 2 evaluations"
    assert len(records(out, "eval")) == 3 and summary["steps"] == 3 and summary["best_step"] == 1
    assert "early stopping" in result.stdout


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_and_no_secret(wandb_offline_run):
    runs = list((wandb_offline_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (
        b"train/loss",
        b"train/tokens_per_s",
        b"eval/perplexity",
        b"eval/bits_per_byte",
        b"test/accuracy",
        b"test/bits_per_byte",
        b"samples",
        b"curves",
        b"throughput_tokens_per_s",
        b"parameters",
        b"run-best",
    ):
        assert key in data, key
    for path in wandb_offline_run.rglob("*"):
        if path.is_file():
            assert WANDB_SECRET.encode() not in path.read_bytes(), path


def test_tensorboard_tracker_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_here(tmp_path / "run", "--tracker", "tensorboard", "--max-steps", "4", "--log-every", "1")
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(acc.Scalars("train/loss")) == 4


# ---- --init-from: fine-tuning and continued pretraining --------------------------------------------
def init_options(out, source, *extra):
    """A short run from `source`'s weights on the smoke stories, its shape taken from `source`."""
    return [
        "train",
        "--data",
        SMOKE_DATA,
        "--init-from",
        source,
        "--output-dir",
        out,
        "--data-cache",
        Path(out).parent / "cache",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-steps",
        "2",
        "--sample-tokens",
        "4",
        "--log-every",
        "1",
        *extra,
    ]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_init_from_a_transformers_folder_starts_at_step_0_from_its_loss(tmp_path, family):
    """A local copy of `gpt2`, or of a Llama such as llama2.c's TinyStories models on the Hub (random
    weights, written by save_pretrained): the run's first evaluation is transformers' own loss."""
    transformers = pytest.importorskip("transformers")
    import torch
    import torch.nn.functional as F

    from launch.data.batching import PackedDataset
    from launch.data.prepare import prepare_data

    torch.manual_seed(0)
    if family == "gpt2":
        shape = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=32, vocab_size=50257)
        source = transformers.GPT2LMHeadModel(shape).eval()
    else:
        shape = transformers.LlamaConfig(
            vocab_size=50257,
            hidden_size=32,
            intermediate_size=86,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
        source = transformers.LlamaForCausalLM(shape).eval()
    source.save_pretrained(tmp_path / f"{family}-copy")
    out = tmp_path / "run"
    result = invoke(*init_options(out, tmp_path / f"{family}-copy", "--eval-batches", "2"), check=True)
    assert "init: weights from" in result.stdout and "start fresh" in result.stdout
    first = records(out, "eval")[0]
    assert first["step"] == 0 and [r["step"] for r in records(out, "train")] == [1, 2]
    assert json.loads((out / "train_config.json").read_text())["init_from"] == str(tmp_path / f"{family}-copy")
    # the run's first evaluation: transformers' own loss on the same validation rows (2 batches of 2)
    split = prepare_data(DataConfig(source=str(SMOKE_DATA), cache_dir=str(tmp_path / "cache")), log=lambda *_: None)
    rows = PackedDataset(split.splits["validation"], 32)
    x = torch.stack([rows[i][0] for i in range(4)])
    y = torch.stack([rows[i][1] for i in range(4)])
    with torch.no_grad():
        expected = F.cross_entropy(source(x).logits.flatten(0, 1), y.flatten()).item()
    assert first["loss"] == pytest.approx(expected, rel=1e-5) and first["tokens"] == 4 * 32


def test_init_from_a_run_takes_its_best_weights_and_a_fresh_schedule(tmp_path, finished_run):
    out = tmp_path / "run"
    invoke(*init_options(out, finished_run, "--lr", "1e-3", "--warmup-steps", "2"), check=True)
    best = json.loads((finished_run / "summary.json").read_text())["best_validation"]
    first = records(out, "eval")[0]
    # every validation row, as the run itself validated: the same rows and the same weights
    assert first["step"] == 0 and first["loss"] == pytest.approx(best["loss"], rel=1e-6)
    assert [r["lr"] for r in records(out, "train")] == pytest.approx([5e-4, 1e-3])  # warmup from step 0 again


def test_init_from_another_architecture_is_one_line_naming_what_differs(tmp_path, finished_run):
    result = invoke(*init_options(tmp_path / "run", finished_run, "--preset", "small"))
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "is another architecture" in errors[0] and "d_model 32 there, 128 here" in errors[0]
    assert "drop --preset to take its own" in errors[0]  # the one architecture flag given
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # read from its config.json alone


def test_init_from_weights_no_tokenizer_fits_is_one_line_before_any_work(tmp_path, story_tokenizer):
    """A transformers GPT-2 folder with a 1,000-token vocabulary and no tokenizer.json: neither a
    512-token --tokenizer nor GPT-2's own fits it, and the line says so (not "trained with GPT-2 BPE")."""
    transformers = pytest.importorskip("transformers")
    shape = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=1000)
    transformers.GPT2LMHeadModel(shape).save_pretrained(tmp_path / "gpt2-1000")
    for extra, tokenizer in ((("--tokenizer", story_tokenizer), "the 512-token BPE"), ((), "GPT-2 BPE")):
        result = invoke(*init_options(tmp_path / "run", tmp_path / "gpt2-1000", *extra))
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert result.exit_code == 2 and len(errors) == 1, result.stderr
        assert "holds a 1,000-token model but no tokenizer.json" in errors[0] and tokenizer in errors[0]
        assert "pass the tokenizer it was trained with: --tokenizer PATH" in errors[0] and "drop" not in errors[0]
        assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_fine_tuning_recipe_continues_a_run_on_other_stories(tmp_path, finished_run):
    import importlib.util

    from tests.helpers import make_stories, write_jsonl

    spec = importlib.util.spec_from_file_location("finetune", REPO / "recipes" / "finetune.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    from launch.cli import train_command

    command = train_command(recipe.RECIPE, name="finetune", needs=("init_from",))
    refused = invoke("--output-dir", tmp_path / "none", command=command)
    assert refused.exit_code == 2 and "finetune needs --init-from" in refused.stderr
    other = write_jsonl(tmp_path / "other.jsonl", make_stories(120, seed=3))
    out = tmp_path / "run"
    invoke(
        "--init-from",
        finished_run,
        "--data",
        other,
        "--output-dir",
        out,
        "--data-cache",
        tmp_path / "cache",
        "--max-steps",
        "3",
        "--sample-tokens",
        "4",
        command=command,
        check=True,
    )
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["lr"] == 5e-5 and saved["init_from"] == str(finished_run) and saved["data"]["max_samples"] is None
    assert records(out, "eval")[0]["step"] == 0 and json.loads((out / "summary.json").read_text())["steps"] == 3


def test_profile_steps_write_a_trace_that_parses_and_print_the_top_operators(tmp_path):
    out = tmp_path / "run"
    result = train_here(out, "--max-steps", "6", "--profile-steps", "2", "--log-every", "1")
    assert "profile: recording steps 3 to 4" in result.stdout
    assert "profile: 2 steps written to" in result.stdout and "Self CPU" in result.stdout  # the operators table
    events = json.loads((out / "profile" / "trace.json").read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4, 5, 6]


# ---- one run, one tracker run ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_paused_twice_is_one_wandb_run_with_each_step_once(tmp_path):
    from launch.tracking.wandb_files import wandb_runs
    from tests.helpers import tiny_run

    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = tmp_path / "run"
    options = ["--tracker", "wandb", "--max-steps", "6", "--log-every", "1", "--eval-every", "2"]
    tiny_run(out, *options, "--stop-after-steps", "2", env=env)
    tiny_run(out, *options, "--resume", "auto", "--stop-after-steps", "2", env=env)
    tiny_run(out, *options, "--resume", "auto", env=env)
    sessions = wandb_runs(out)
    assert len(sessions) == 3 and len({s.run_id for s in sessions}) == 1  # three sessions, one W&B run
    train_steps = sorted(step for s in sessions for step, keys in s.history.items() if "train/loss" in keys)
    assert train_steps == [1, 2, 3, 4, 5, 6]  # each step once, across the sessions' files
    assert json.loads((out / "tracker.json").read_text())["wandb_id"] == sessions[0].run_id
    # a resume that redoes steps the W&B run holds already (the last checkpoint lost) sends them not again
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-0000006")
    killed_early = out / "wandb" / f"offline-run-20000101_000000-{sessions[0].run_id}"
    killed_early.mkdir()  # a session killed before W&B wrote its file: nothing to read, nothing held
    tiny_run(out, *options, "--resume", "auto", env=env)
    killed_early.rmdir()
    sessions = wandb_runs(out)
    assert len(sessions) == 4 and len({s.run_id for s in sessions}) == 1
    assert sorted(step for s in sessions for step, keys in s.history.items() if "train/loss" in keys) == train_steps
    # `share` makes one report of the one W&B run, naming every session's folder to sync
    shared = invoke("share", out, env={"WANDB_MODE": "offline"})
    spec = json.loads((out / "wandb_report.json").read_text())
    assert shared.exit_code == 2 and spec["run_ids"] == [sessions[0].run_id]
    assert sorted(spec["run_folders"]) == sorted(str(s.folder) for s in sessions)


def test_tensorboard_holds_each_step_once_when_a_resume_redoes_steps(tmp_path):
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    options = ["--tracker", "tensorboard", "--max-steps", "6", "--log-every", "1", "--save-every", "2"]
    train_here(out, *options)
    shutil.rmtree(out / "checkpoints" / "step-0000006")  # as if killed before saving step 6: 5 and 6 are redone
    train_here(out, *options, "--resume", "auto")
    events = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4, 5, 6]


# ---- a trained tokenizer: the run's vocabulary, carried by every checkpoint ----------------------
@pytest.mark.slow
def test_a_run_with_a_trained_tokenizer_resumes_bit_for_bit_and_carries_it(story_run, story_tokenizer, tmp_path):
    straight = tmp_path / "straight"
    train_here(straight, "--tokenizer", story_tokenizer, *STORY_RUN)
    assert losses(story_run) == losses(straight) and records(story_run, "test") == records(straight, "test")
    summary = json.loads((story_run / "summary.json").read_text())
    assert summary["model"]["vocab_size"] == 512 and summary["data"]["tokenizer"]["vocab_size"] == 512
    for folder in (story_run, story_run / "checkpoints" / "best", *(story_run / "checkpoints").glob("step-*")):
        assert load_tokenizer(folder).fingerprint == load_tokenizer(story_tokenizer).fingerprint, folder
    assert all(s["text"] for s in summary["samples"])


def test_a_run_whose_tokenizer_file_moved_resumes_with_its_own_copy(story_run, story_tokenizer, tmp_path):
    import shutil

    tokenizer, run = tmp_path / "tokenizer", tmp_path / "run"
    shutil.copytree(story_tokenizer, tokenizer)
    train_here(run, "--tokenizer", tokenizer, *STORY_RUN, "--stop-after-steps", "4")
    shutil.move(tokenizer, tmp_path / "elsewhere")  # the path train_config.json names is gone
    train_here(run, *STORY_RUN, "--resume", "auto")
    assert outcome(run) == outcome(story_run)  # the same run, read with the run's own copy


def test_init_from_takes_the_weights_tokenizer_and_refuses_another(tmp_path, story_run):
    refused = invoke(*init_options(tmp_path / "a", story_run, "--tokenizer", "gpt2"))
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert refused.exit_code == 2 and len(errors) == 1, refused.stderr
    assert "was trained with the 512-token BPE" in errors[0] and "not with GPT-2 BPE" in errors[0]
    assert not (tmp_path / "a").exists()
    invoke(*init_options(tmp_path / "b", story_run), check=True)  # no flag: its own tokenizer
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["model"]["vocab_size"] == 512


def test_resume_with_another_tokenizer_of_the_same_size_is_refused_naming_both(tmp_path, story_run):
    import shutil

    other = tmp_path / "other-512"  # the smoke stories cut another way: another 512-token BPE
    cache = story_run.parent / "cache"
    train = ["--data", SMOKE_DATA, "--data-cache", cache, "--split-mode", "shuffle", "--seed", "7"]
    invoke("tokenizer", "train", *train, "--vocab-size", "512", "--output", other, check=True)
    run = tmp_path / "run"
    shutil.copytree(story_run, run)
    (run / "summary.json").unlink()  # as if it were paused: a finished run is not trained again
    result = invoke("train", "--resume", "auto", "--output-dir", run, "--tokenizer", other, "--allow-changes")
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert (
        f"the 512-token BPE in {other / 'tokenizer.json'}" in errors[0]
        and "was trained with the 512-token" in errors[0]
    )


def test_nan_loss_stops_the_run_within_one_log_interval(tmp_path):
    out = tmp_path / "run"
    result = train(out, "--lr", "1e30", "--max-steps", "40", "--warmup-steps", "1", "--save-every", "1", check=False)
    one_error_line(result, "the training loss became")
    assert "--resume auto" in result.stderr and "lower --lr" in result.stderr
    bad_step = int(result.stderr.split("by step ")[1].split(";")[0])
    logged = losses(out)
    assert max(logged) < bad_step and all(v == v and abs(v) != float("inf") for v in logged.values())
    saved = [int(p.name[5:]) for p in (out / "checkpoints").glob("step-*")]
    assert saved and max(saved) < bad_step  # nothing diverged was saved


@pytest.mark.slow
def test_same_seed_same_losses_bit_for_bit(tmp_path, straight):
    train(tmp_path / "again", *REFERENCE)
    assert outcome(tmp_path / "again") == straight
    train(tmp_path / "other", *REFERENCE, "--seed", "7")
    assert outcome(tmp_path / "other") != straight


def test_the_llama_recipe_trains_llama_small_with_muon_and_needs_a_story_tokenizer(tmp_path, story_tokenizer):
    import importlib.util

    spec = importlib.util.spec_from_file_location("llama_stories", REPO / "recipes" / "llama_stories.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    from launch.cli import train_command

    command = train_command(recipe.RECIPE, name="llama_stories", needs=("data.tokenizer",))
    refused = invoke("--smoke", "--output-dir", tmp_path / "none", command=command)
    assert refused.exit_code == 2 and "llama_stories needs --tokenizer" in refused.stderr
    out = tmp_path / "run"
    options = ["--smoke", "--tokenizer", story_tokenizer, "--output-dir", out, "--data-cache", tmp_path / "cache"]
    invoke(*options, "--max-steps", "2", "--sample-tokens", "4", command=command, check=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["optimizer"] == "muon" and summary["model"]["positions"] == "rope"
    assert summary["model"]["vocab_size"] == 512 and summary["model"]["n_kv_head"] == 2
