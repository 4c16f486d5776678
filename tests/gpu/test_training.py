"""One-process runs of the GPU paths, as a user types them, on each device: bf16 through Accelerate
(pause and resume, with activation checkpointing, a trained tokenizer and --init-from), --compile
(with and without bf16; compiled and eager checkpoints resume in each other), fp16 loss scaling
that skips updates, and evaluate/generate in the precision the weights were trained in."""

import json

import pytest
import torch

from gpt_core import GPT, load_pretrained
from launch.checkpoints.restoring import read_trainer_state
from launch.runtime.precision import supports_precision
from tests.gpu.conftest import close, device_env, same_run
from tests.helpers import invoke, outcome, records, train_here
from tests.launch.training.test_optim import expected_lr

pytestmark = pytest.mark.slow  # each trains for seconds

BF16 = ("--mixed-precision", "bf16", "--max-steps", "6", "--eval-every", "2", "--log-every", "1")


def paused_and_resumed(out, first: tuple, second: tuple, env: dict, at: int = 3) -> None:
    """A run paused after `at` steps with the options `first`, resumed to its end with `second`."""
    train_here(out, *first, "--stop-after-steps", at, env=env)
    train_here(out, *second, "--resume", "auto", env=env)


@pytest.fixture(scope="session")
def bf16_runs(device, story_run, tmp_path_factory):
    """bf16 from a trained tokenizer's weights with activation checkpointing: straight, and paused then resumed."""
    root, env = tmp_path_factory.mktemp(f"bf16-{device.type}"), device_env(device)
    options = ("--init-from", story_run, "--activation-checkpointing", *BF16)
    train_here(root / "straight", *options, env=env)
    paused_and_resumed(root / "resumed", options, BF16, env)
    return root / "straight", root / "resumed"


def test_bf16_pauses_and_resumes_exactly_with_recomputation_a_trained_tokenizer_and_init_from(device, bf16_runs):
    straight, resumed = bf16_runs
    same_run(device, outcome(resumed), outcome(straight))
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["hardware"]["mixed_precision"] == "bf16" and summary["model"]["vocab_size"] == 512
    assert (resumed / "checkpoints" / "best" / "tokenizer.json").is_file()
    state = read_trainer_state(resumed / "checkpoints" / "best")
    assert state["mixed_precision"] == "bf16"  # what evaluate and generate follow


# ---- --compile -------------------------------------------------------------------------------------
COMPILED = ("--max-steps", "4", "--eval-every", "2", "--log-every", "1")  # tiny has no dropout: compiled = eager


@pytest.fixture(scope="session")
def compile_runs(device, tmp_path_factory):
    """Eager straight through; compiled then resumed eager; eager then resumed compiled; and in bf16
    with activation checkpointing, eager straight and compiled then resumed eager."""
    root, env = tmp_path_factory.mktemp(f"compile-{device.type}"), device_env(device)
    bf16 = ("--mixed-precision", "bf16", "--activation-checkpointing", *COMPILED)
    train_here(root / "eager", *COMPILED, env=env)
    paused_and_resumed(root / "compiled-then-eager", ("--compile", *COMPILED), COMPILED, env, at=2)
    paused_and_resumed(root / "eager-then-compiled", COMPILED, ("--compile", *COMPILED), env, at=2)
    train_here(root / "bf16-eager", *bf16, env=env)
    paused_and_resumed(root / "bf16-compiled-then-eager", ("--compile", *bf16), bf16, env, at=2)
    return root


def test_compiled_and_eager_checkpoints_resume_in_each_other(compile_runs):
    eager = outcome(compile_runs / "eager")
    close(eager, outcome(compile_runs / "compiled-then-eager"), rel=1e-4)
    close(eager, outcome(compile_runs / "eager-then-compiled"), rel=1e-4)
    # bf16 rounds each product: inductor's fused kernels round at other places than eager ones
    close(outcome(compile_runs / "bf16-eager"), outcome(compile_runs / "bf16-compiled-then-eager"), rel=2e-2)
    for run in ("compiled-then-eager", "eager-then-compiled", "bf16-compiled-then-eager"):
        for checkpoint in (compile_runs / run / "checkpoints").iterdir():
            load_pretrained(checkpoint)  # the model's own names: no `_orig_mod.` anywhere


def test_a_compiled_run_evaluates_generates_and_exports(compile_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    run = compile_runs / "eager-then-compiled"  # it finished compiled: its end, best and last step
    result = invoke("evaluate", run, "--max-batches", "2", check=True)
    assert "test: loss " in result.stdout
    assert invoke("generate", run, "--max-tokens", "5", "--seed", "1", check=True).stdout.startswith("Once upon")
    invoke("export", run, tmp_path / "export", check=True)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "export").num_parameters() > 0


# ---- fp16: updates the loss scaler skips ------------------------------------------------------------
OVERFLOWS = 3  # backward passes: with 2 micro-batches per update, updates 1 and 2 overflow


class FirstPassesOverflow(GPT):
    """The model, whose embedding gradient is inf in the first OVERFLOWS backward passes of a run (its
    sessions together): what an fp16 overflow (a loss scale too high for the gradients) looks like
    to the loss scaler."""

    passes = 0  # of the run in progress; the test sets it to 0 before each run

    def __init__(self, config):
        super().__init__(config)
        self.embed.weight.register_hook(self._overflow)

    def _overflow(self, grad):
        FirstPassesOverflow.passes += 1
        return grad * float("inf") if FirstPassesOverflow.passes <= OVERFLOWS else grad


def test_a_skipped_fp16_update_is_not_a_step_and_the_scaler_resumes(device, tmp_path, monkeypatch):
    """A real GradScaler meets an inf and skips those updates. On a GPU, Accelerate's own fp16 setup;
    on a CPU, where Accelerate refuses fp16, the test sets up what Accelerate sets up on a GPU (the
    scaler, unscaling before clipping) but leaves the products in fp32 (CPU fp16 matmuls take ~40x
    as long). The optimizer is the loop's fused AdamW, whose kernel does the skipping. A run paused
    after the skips resumes with the scaler's state: the same scale, so the same updates."""
    from accelerate.utils import AutocastKwargs

    from launch.training import loop

    make = loop.make_accelerator

    def with_a_scaler_on_cpu(*args, **kwargs):
        accelerator = make(*args, **kwargs)
        if accelerator.device.type == "cpu":
            accelerator.state._mixed_precision, accelerator.native_amp = "fp16", True
            accelerator.autocast_handler = AutocastKwargs(enabled=False)
            accelerator.scaler = torch.amp.GradScaler("cpu")
        return accelerator

    monkeypatch.setattr(loop, "make_accelerator", with_a_scaler_on_cpu)
    monkeypatch.setattr(loop, "GPT", FirstPassesOverflow)
    schedule = ("--schedule", "linear", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "2")
    precision = ("--mixed-precision", "fp16") if device.type == "cuda" else ()
    options = (*schedule, "--max-steps", "6", "--log-every", "1", "--eval-every", "100", *precision)
    env = device_env(device)
    FirstPassesOverflow.passes = 0
    paused_and_resumed(tmp_path / "run", options, options, env)  # paused after the skips: at step 3

    train = records(tmp_path / "run", "train")
    assert [r["step"] for r in train] == list(range(1, 7))  # six updates applied, each one step
    assert [r["skipped_updates"] for r in train] == [2] * 6  # the two before the first were skipped
    for r in train:  # and left the schedule where it was: step 1 warms up from the start
        assert r["lr"] == pytest.approx(expected_lr("linear", r["step"] - 1, min_lr=1e-4, warmup=2, total=6), rel=1e-12)
    assert [r["tokens"] for r in train] == [2 * 2 * 32 * r["step"] for r in train]  # their tokens not counted
    state = read_trainer_state(tmp_path / "run" / "checkpoints" / "step-0000006")
    assert state["epoch"] * 14 + state["batch_in_epoch"] == (6 + 2) * 2  # but their batches were used up
    assert state["skipped_updates"] == 2
    # the scaler came back from the pause: two halvings of 2**16 and six good steps since, as if never paused
    scaler = torch.load(tmp_path / "run" / "checkpoints" / "step-0000006" / "state" / "scaler.pt")
    assert scaler["scale"] == 2.0**16 / 4 and scaler["_growth_tracker"] == 6


# ---- evaluate and generate take the weights' precision -----------------------------------------------
def test_evaluate_and_generate_run_in_the_weights_precision_or_the_one_asked(device, bf16_runs, tmp_path):
    run, env = bf16_runs[0], device_env(device)
    default = "bf16" if supports_precision(device, "bf16") else "no"
    out = {p: tmp_path / f"{p}.json" for p in ("default", "bf16", "no")}
    shown = invoke("evaluate", run, "--max-batches", "2", "--json-out", out["default"], env=env, check=True)
    assert (
        "as the weights were trained" in shown.stdout if default == "bf16" else "does not run at speed" in shown.stdout
    )
    for precision in ("bf16", "no"):
        asked = ("--mixed-precision", precision, "--json-out", out[precision])
        assert "as --mixed-precision asks" in invoke("evaluate", run, "--max-batches", "2", *asked, env=env).stdout
    metrics = {p: json.loads(path.read_text()) for p, path in out.items()}
    assert metrics["default"]["mixed_precision"] == default
    assert metrics["bf16"]["mixed_precision"] == "bf16" and metrics["no"]["mixed_precision"] == "no"
    assert metrics["bf16"]["loss"] == pytest.approx(metrics["no"]["loss"], rel=2e-2)
    assert metrics["bf16"]["loss"] != metrics["no"]["loss"]  # it really ran in bf16
    sample = invoke("generate", run, "--max-tokens", "4", "--mixed-precision", "bf16", "--device", device.type)
    assert sample.exit_code == 0 and "bf16 autocast, as --mixed-precision asks" in sample.stderr


def test_fp16_evaluation_or_generation_on_a_cpu_is_one_line(bf16_runs):
    cpu = {"ACCELERATE_USE_CPU": "true"}  # Accelerate's own switch, which evaluate follows
    for args in (("evaluate", bf16_runs[0]), ("generate", bf16_runs[0], "--device", "cpu")):
        result = invoke(*args, "--mixed-precision", "fp16", env=cpu)
        assert result.exit_code == 2 and result.stderr.count("error:") == 1, result.stderr
        assert "error: --mixed-precision fp16 needs a GPU" in result.stderr
