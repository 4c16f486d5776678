"""launch/checkpoints/restoring.py: a checkpoint is the same whatever wraps the model that writes or reads it."""

import os
import shutil

import pytest
import torch

from gpt_core import GPT, load_pretrained
from launch.checkpoints.folders import step_checkpoints
from launch.checkpoints.restoring import load_training_state, plain_model
from launch.checkpoints.saving import store_weights_once
from launch.runtime.accelerator import make_accelerator
from launch.settings.config import TrainConfig
from launch.training.optim import build_optimizer
from tests.faults import one_error_line, train, train_args
from tests.helpers import REPO, invoke, run_cli, tree_digest


def test_a_checkpoint_resumes_into_a_compiled_wrapper(paused_run):
    """Accelerate launched with a dynamo backend wraps the model in torch.compile's OptimizedModule,
    whose keys are `_orig_mod.<name>`: the checkpoint's plain names load into the model inside it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    step = step_checkpoints(paused_run)[-1]
    saved = load_pretrained(step)
    accelerator = make_accelerator()
    model = GPT(saved.config)
    wrapped = torch.compile(model)  # nothing is compiled until it runs
    optimizer = build_optimizer(wrapped, TrainConfig(), accelerator.device)
    store_weights_once(accelerator)
    wrapped, optimizer = accelerator.prepare(wrapped, optimizer)
    load_training_state(accelerator, wrapped, step)
    assert plain_model(accelerator, wrapped) is model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items())


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


def copy_with_last_step(paused_run, tmp_path):
    """A copy of the paused run to damage, and its last step checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    return run, sorted((run / "checkpoints").glob("step-*"))[-1]


@pytest.mark.parametrize("name", ["model.safetensors", "state/optimizer.bin", "trainer_state.json", "config.json"])
def test_a_truncated_checkpoint_file_is_one_line_before_any_data_work(paused_run, tmp_path, name):
    run, step = copy_with_last_step(paused_run, tmp_path)
    data = (step / name).read_bytes()
    (step / name).write_bytes(data[: len(data) // 2])
    shutil.rmtree(run.parent / "cache", ignore_errors=True)  # the run's data cache, if beside it
    before = tree_digest(run)
    result = train(run, "--resume", "auto", "--data-cache", tmp_path / "cache", check=False)
    one_error_line(result, f"{step} is corrupt ({name}: ")
    assert tree_digest(run) == before
    assert "resume from an older step-N folder" in result.stderr
    assert "data:" not in result.stdout and "model:" not in result.stdout and not (tmp_path / "cache").exists()


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl"])
def test_a_malicious_pickle_in_a_checkpoint_is_refused(paused_run, tmp_path, monkeypatch, name):
    """Each file alone, as torch.save writes it (a whole zip): only weights_only loading stops it."""
    run, step = copy_with_last_step(paused_run, tmp_path)
    torch.save({"state": Payload()}, step / "state" / name)
    monkeypatch.chdir(tmp_path)  # where `touch PWNED` would land
    one_error_line(train(run, "--resume", "auto", check=False), "could not be loaded")
    assert not (tmp_path / "PWNED").exists() and not (REPO / "PWNED").exists()


def test_a_corrupt_rng_state_is_a_clear_error_not_a_silent_inexact_resume(paused_run, tmp_path):
    run, step = copy_with_last_step(paused_run, tmp_path)
    (step / "state" / "random_states_0.pkl").write_bytes(b"\x00not a torch file" * 10)
    one_error_line(train(run, "--resume", "auto", check=False), "could not be loaded")
