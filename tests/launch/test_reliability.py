"""Faults a real machine causes, caused for real: kills, signals, divergence, a dying peer, a full
disk, bad input and hostile files. Nothing may be lost and every user mistake is one line.

The fault itself happens in a process of its own (a kill, a signal, a resource limit); what comes
before and after it, and every bad input, runs in this process (tests.helpers.invoke)."""

import json
import os
import pickle
import resource
import signal
import subprocess
import time

import psutil
import pytest

from launch.settings.config import SMOKE_DATA
from tests.helpers import REFERENCE, REPO, child_env, invoke, launch_two, losses, outcome, run_cli, train_here
from tests.helpers import train_args as tiny_train_args


def train_args(out, *extra):
    """The tiny run in a process of its own, logging every step: a fault must be seen at the step it happens."""
    return tiny_train_args(out, "--log-every", "1", *extra)


def train(out, *extra, check=True):
    """The same run in this process."""
    return train_here(out, "--log-every", "1", *extra, check=check)


def start(args, env=None):
    return subprocess.Popen(
        args, cwd=REPO, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def with_file_size_limit(args, limit: int):
    """Run `args` where no file may grow past `limit` bytes: writes then fail as on a full disk."""

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        args, cwd=REPO, env=child_env(), capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300
    )


def wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(losses(run_dir), default=0) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def one_error_line(result, words):
    """A finished process (returncode) or an in-process command (exit_code): status 2, one error line."""
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert getattr(result, "returncode", getattr(result, "exit_code", None)) == 2, result.stderr[-2000:]
    assert len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def straight(reference_run):
    """Everything the uninterrupted run logged: losses, learning rates, gradient norms, tokens,
    evaluations and the test result (outcome)."""
    return outcome(reference_run)


# ---- faults ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_training_then_resume_auto(tmp_path, straight):
    out = tmp_path / "run"
    proc = start(train_args(out, *REFERENCE))
    wait_for_step(out, 7, proc)
    proc.kill()
    proc.wait()
    train(out, *REFERENCE, "--resume", "auto")
    assert outcome(out) == straight  # bit for bit after the resume, every step once


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_never_leaves_a_pickable_one(tmp_path, straight):
    out = tmp_path / "run"
    train(out, *REFERENCE, "--stop-after-steps", "4")  # a complete step-4 checkpoint
    fault = {"GPT_LAUNCH_FAULT": "kill-while-saving"}
    killed = run_cli(train_args(out, *REFERENCE, "--resume", "auto"), env=fault, check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*"))[-1] == "step-0000004"
    temporary = [p.name for p in ckpts.glob(".tmp-step-*")]
    assert temporary == [".tmp-step-0000006"], "the half-written one keeps its temporary name"
    resumed = train(out, *REFERENCE, "--resume", "auto")
    assert "step-0000004" in resumed.stdout
    assert outcome(out) == straight


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_and_say_how_to_resume(tmp_path, sig, code, straight):
    out = tmp_path / "run"
    proc = start(train_args(out, *REFERENCE))
    wait_for_step(out, 3, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert f"{signal.Signals(sig).name} received: saved step" in stderr and "--resume auto" in stderr
    assert "Traceback" not in stderr
    saved = int(stderr.split("saved step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"step-{saved:07d}" / "state").is_dir()
    train(out, *REFERENCE, "--resume", "auto")
    assert outcome(out) == straight


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
def test_a_dying_peer_ends_the_run_instead_of_hanging(tmp_path):
    out = tmp_path / "run"
    args = launch_two("-m", "launch.cli", *train_args(out, "--max-steps", "400", "--epochs", "100")[3:])
    proc = start(args)
    wait_for_step(out, 2, proc)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert workers, "rank 1 not found"
    workers[0].kill()
    start_wait = time.time()
    proc.communicate(timeout=180)  # bounded: a hang would fail the test here
    assert proc.returncode != 0
    assert time.time() - start_wait < 180


@pytest.mark.slow
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, straight):
    out = tmp_path / "run"
    train(out, *REFERENCE, "--stop-after-steps", "4")
    step_4 = out / "checkpoints" / "step-0000004"
    before = {p.name: p.stat().st_size for p in step_4.rglob("*") if p.is_file()}
    # smaller than the optimizer state: the next save cannot complete
    proc = with_file_size_limit(train_args(out, *REFERENCE, "--resume", "auto"), 4 << 20)
    one_error_line(proc, "no space left")
    assert "the previous checkpoint step-0000004 is intact" in proc.stderr
    assert {p.name: p.stat().st_size for p in step_4.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*"))[-1] == "step-0000004"
    assert not list((out / "checkpoints").glob(".tmp-step-*"))
    train(out, *REFERENCE, "--resume", "auto")  # with space again, nothing was lost
    assert outcome(out) == straight


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint_does_not_promise_an_earlier_one(tmp_path):
    proc = with_file_size_limit(train_args(tmp_path / "run", "--max-steps", "4", "--save-every", "1"), 4 << 20)
    one_error_line(proc, "no earlier checkpoint exists")
    assert "intact" not in proc.stderr


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_the_next_start_cleans_up(tmp_path):
    out = tmp_path / "run"
    proc = start(train_args(out, "--preset", "paper", "--max-steps", "400", "--epochs", "100", "--grad-accum", "2"))
    wait_for_step(out, 2, proc)
    time.sleep(0.3)  # into step 3 (~2 s on 2 cores): the first Ctrl-C asks to save at its end
    proc.send_signal(signal.SIGINT)
    time.sleep(0.7)  # a second, separate Ctrl-C (a repeat within 0.5 s is the same one), mid-step or mid-save
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted twice" in stderr and "Aborted!" not in stderr, stderr[-2000:]
    assert not list((out / "checkpoints").glob("step-*")), "stopped without saving (a save cut short stays .tmp-)"
    (out / "checkpoints" / ".tmp-step-0000009").mkdir(parents=True)  # what a save cut short leaves
    again = train(out, "--max-steps", "2", "--resume", "auto")
    # ours, and the save the second Ctrl-C may have cut short
    assert "unfinished temporary folder(s)" in again.stdout and ".tmp-step-0000009" in again.stdout
    assert not list((out / "checkpoints").glob(".tmp-*"))


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "missing/stories.jsonl"], "data path missing/stories.jsonl does not exist"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--lr", "-0.001"], "--lr must be > 0, got -0.001"),
        (["--preset", "gigantic"], "unknown preset 'gigantic'"),
    ],
)
def test_bad_training_input_is_one_line(tmp_path, args, words):
    one_error_line(train(tmp_path / "run", *args, check=False), words)


def test_impossible_model_config_file(tmp_path):
    (tmp_path / "model.json").write_text(
        json.dumps({"d_model": 64, "n_head": 6, "context_length": 32, "n_layer": 1, "d_ff": 64})
    )
    proc = train(tmp_path / "run", "--model-config", str(tmp_path / "model.json"), check=False)
    one_error_line(proc, "d_model (64) must be divisible by n_head (6)")


def test_empty_and_unparseable_data(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    one_error_line(train(tmp_path / "r1", "--data", str(tmp_path / "empty.jsonl"), check=False), "is empty")
    (tmp_path / "bad.jsonl").write_text('{"text": "A good story about a dog."}\n{"text": oops}\n')
    one_error_line(
        train(tmp_path / "r2", "--data", str(tmp_path / "bad.jsonl"), check=False), "bad.jsonl:2: not valid JSON"
    )


@pytest.mark.slow
def test_unreachable_hub_with_no_local_data(tmp_path):
    # a process of its own: huggingface_hub reads HF_HUB_OFFLINE when it is first imported
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = run_cli(train_args(tmp_path / "run", "--data", "roneneldan/TinyStories"), env=env, check=False)
    one_error_line(proc, "cannot reach the Hugging Face hub")


@pytest.mark.slow
def test_resuming_with_another_model_config_is_refused(paused_run, tmp_path):
    proc = run_cli(train_args(paused_run, "--resume", "auto", "--preset", "small"), check=False)
    one_error_line(proc, "--preset 'tiny' -> 'small'")
    # even when changes are allowed, weights of another shape cannot be loaded
    proc = run_cli(train_args(paused_run, "--resume", "auto", "--preset", "small", "--allow-changes"), check=False)
    one_error_line(proc, "was trained with a different model config")


def test_truncated_weights_are_a_clear_error(paused_run, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(paused_run / "checkpoints" / "best", copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 3])
    one_error_line(invoke("generate", copy, "--max-tokens", "3"), "is corrupt")


def test_corrupt_training_state_is_a_clear_error(paused_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    (step / "state" / "optimizer.bin").write_bytes(b"\x00garbage" * 10)
    one_error_line(train(run, "--resume", "auto", check=False), "could not be loaded")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_pickle_in_a_checkpoint_is_refused(paused_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    for name in ("optimizer.bin", "random_states_0.pkl"):
        (step / "state" / name).write_bytes(pickle.dumps({"state": Payload()}))
    monkeypatch.chdir(tmp_path)  # where `touch PWNED` would land
    one_error_line(train(run, "--resume", "auto", check=False), "could not be loaded")
    assert not (tmp_path / "PWNED").exists() and not (REPO / "PWNED").exists()


def test_a_corrupt_rng_state_is_a_clear_error_not_a_silent_inexact_resume(paused_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    (step / "state" / "random_states_0.pkl").write_bytes(b"\x00not a torch file" * 10)
    one_error_line(train(run, "--resume", "auto", check=False), "could not be loaded")


def test_an_output_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    proc = train(tmp_path / "file" / "run", "--max-steps", "2", "--data-cache", tmp_path / "cache", check=False)
    one_error_line(proc, "is a file, so nothing can be made under it; choose another --output-dir")
    assert not (tmp_path / "cache").exists(), "checked before any data work"


def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path):
    proc = train(tmp_path / "run", "--mixed-precision", "fp16", "--max-steps", "2", check=False)
    one_error_line(proc, "fp16 mixed precision needs a GPU")
    assert not (tmp_path / "run").exists(), "a failed run leaves no empty output folder"


def test_failed_runs_leave_no_output_folder(tmp_path):
    train(tmp_path / "run", "--data", str(tmp_path / "missing.jsonl"), check=False)
    (tmp_path / "empty.jsonl").write_text("")
    train(tmp_path / "run", "--data", str(tmp_path / "empty.jsonl"), check=False)
    assert not (tmp_path / "run").exists()


# ---- determinism ------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_losses_bit_for_bit(tmp_path, straight):
    train(tmp_path / "again", *REFERENCE)
    assert outcome(tmp_path / "again") == straight
    train(tmp_path / "other", *REFERENCE, "--seed", "7")
    assert outcome(tmp_path / "other") != straight


# ---- at a run's edges: nothing lost, nothing polluted ----------------------------------------------
def comparable(summary: dict) -> dict:
    """A summary without what differs between two runs of the same settings: times and folders."""
    timing = ("elapsed_seconds", "throughput_tokens_per_s", "best_checkpoint")
    data = {k: v for k, v in summary["data"].items() if k not in ("cache", "prepare_seconds", "tokens_per_second")}
    config = {k: v for k, v in summary["config"].items() if k not in ("output_dir", "resume")}
    config["data"] = {k: v for k, v in config["data"].items() if k != "cache_dir"}
    return {**{k: v for k, v in summary.items() if k not in timing}, "data": data, "config": config}


def untimed(run_dir) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "tokens_per_s"}
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    ]


@pytest.mark.slow
def test_killed_during_the_final_test_the_resumed_run_writes_the_same_summary(tmp_path, reference_run):
    out = tmp_path / "run"
    killed = run_cli(train_args(out, *REFERENCE), env={"GPT_LAUNCH_FAULT": "kill-during-test"}, check=False)
    assert killed.returncode == -signal.SIGKILL and not (out / "summary.json").exists()
    resumed = invoke("train", "--resume", "auto", "--output-dir", out, check=True)  # the run's own settings
    assert "stopped before its summary was written" in resumed.stdout
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, reference_run))
    assert comparable(summary) == comparable(reference)
    assert (out / "curves.png").exists() and untimed(out) == untimed(reference_run)


@pytest.mark.slow
def test_killed_before_its_first_checkpoint_the_run_starts_its_logs_again(tmp_path, reference_run):
    out = tmp_path / "run"
    proc = start(train_args(out, *REFERENCE, "--save-every", "1000"))  # the first checkpoint: the epoch's end, step 4
    wait_for_step(out, 1, proc)
    proc.kill()
    proc.wait()
    assert not (out / "checkpoints").exists() and untimed(out), "killed after logging, before any checkpoint"
    resumed = invoke("train", "--resume", "auto", "--output-dir", out, check=True)  # the run's own settings
    assert "starting from scratch" in resumed.stdout and "dropped" in resumed.stdout
    assert untimed(out) == untimed(reference_run)


@pytest.mark.slow
def test_a_full_disk_at_the_start_is_one_line_and_leaves_no_half_written_settings(tmp_path):
    out = tmp_path / "run"
    invoke("prepare", "--data", SMOKE_DATA, "--data-cache", out.parent / "cache", check=True)  # the cache is ready
    proc = with_file_size_limit(train_args(out), 1024)  # train_config.json (~3 kB) cannot be written
    one_error_line(proc, "could not write")
    assert "train_config.json (no space left" in proc.stderr
    assert not list(out.glob("train_config.json*"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prompt", ""], "--prompt '': the prompt is empty"),
        (["--prompt", "word" + " word" * 40], "the prompt has 41 tokens but the model's context is 32"),
        (["--betas", "1.5", "0.95"], "--betas must be two numbers in [0, 1), got 1.5 0.95"),
        (["--betas", "-0.1", "0.95"], "--betas must be two numbers in [0, 1)"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--seed", "4294967296"], "--seed must be <= 4,294,967,295"),
        (["--collective-timeout", "1e30"], "--collective-timeout must be <= 31,536,000"),
        (["--output-dir", ""], "--output-dir is empty"),
        (["--data", ""], "--data is empty"),
        (["--batch-size", "auto"], "--batch-size auto finds the largest micro-batch that fits in a GPU's memory"),
    ],
)
def test_more_bad_training_input_is_one_line_before_any_work(tmp_path, args, words):
    result = train_here(tmp_path / "run", "--data-cache", tmp_path / "cache", *args, check=False)
    one_error_line(result, words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_model_config_that_is_a_folder_is_one_line(tmp_path):
    one_error_line(
        train(tmp_path / "run", "--model-config", tmp_path, check=False), "is a folder; pass its config.json"
    )


def test_a_data_cache_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    one_error_line(train(tmp_path / "run", "--data-cache", tmp_path / "cache", check=False), "--data-cache")


def test_a_context_past_memory_is_one_line(tmp_path):
    config = {"n_layer": 1, "n_head": 1, "d_model": 8, "d_ff": 8, "context_length": 2**36}
    (tmp_path / "model.json").write_text(json.dumps(config))
    result = train(tmp_path / "run", "--model-config", tmp_path / "model.json", "--layout", "padded", check=False)
    one_error_line(result, "out of memory; lower --batch-size, or the model's context_length")


def test_a_context_longer_than_the_data_names_the_real_setting(tmp_path):
    config = {"n_layer": 1, "n_head": 1, "d_model": 8, "d_ff": 8, "context_length": 4096}
    (tmp_path / "model.json").write_text(json.dumps(config))
    result = train(tmp_path / "run", "--model-config", tmp_path / "model.json", check=False)
    one_error_line(result, "a shorter context_length in a --model-config file")
    assert "--context " not in result.stderr


@pytest.mark.parametrize("command", ["train", "prepare", "evaluate"])
def test_a_cut_or_fake_gzip_file_is_one_line(tmp_path, command, finished_run):
    from tests.helpers import make_stories, write_jsonl

    whole = write_jsonl(tmp_path / "whole.jsonl.gz", make_stories(3000), gz=True).read_bytes()
    (tmp_path / "half.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_text('{"text": "A story that was never compressed."}\n')
    before = {
        "train": ["train", *train_args(tmp_path / "run")[4:]],
        "prepare": ["prepare"],
        "evaluate": ["evaluate", finished_run],
    }[command]
    for name in ("half.jsonl.gz", "plain.jsonl.gz"):
        result = invoke(*before, "--data", tmp_path / name, "--data-cache", tmp_path / "cache")
        one_error_line(result, f"{tmp_path / name} is not a complete gzip file")
    assert not (tmp_path / "run").exists()


def test_stories_that_are_not_text_name_the_reason_they_were_dropped(tmp_path):
    values = [None, 7, ["a", "list"], {"a": "dict"}] * 100
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps({"text": v}) + "\n" for v in values))
    result = train(tmp_path / "run", "--data", tmp_path / "odd.jsonl", check=False)
    one_error_line(result, "400 stories read, 400 dropped: 400 not a string (e.g. null or a number)")
    assert "--text-field" in result.stderr
