"""launch/runtime.py: how signals are read, in this process and in a run that receives them; a dying peer."""

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import launch.runtime as runtime
from launch.runtime import StopSignal
from tests.faults import start, train, train_args, wait_for_step
from tests.helpers import REFERENCE, launch_two, outcome


def test_a_signal_delivered_twice_at_once_is_one_request_and_a_later_one_stops_now():
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # as when the launcher forwards what Slurm sent us too
        assert stop.name == "SIGTERM"
        time.sleep(StopSignal.DUPLICATE_S + 0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs at the next bytecode boundary
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_shipped_deepspeed_config_is_found_from_any_folder(tmp_path, monkeypatch):
    """launch/configs/deepspeed_zero*.yaml name their JSON relative to the repository root; from elsewhere
    (a user's own project folder) the JSON shipped in the package is used."""
    import launch
    from launch.runtime import find_shipped_deepspeed_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "launch/configs/ds_zero3.json")
    find_shipped_deepspeed_config()
    assert os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(
        Path(launch.__file__).parent / "configs" / "ds_zero3.json"
    )
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "configs/mine.json")  # the user's own: left alone
    find_shipped_deepspeed_config()
    assert os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == "configs/mine.json"


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


# ---- bf16 on a CPU ------------------------------------------------------------------------------------
def test_precision_advice_follows_this_cpus_measured_bf16_factor():
    """Measured once per process; fp32 is advised to try bf16 only where bf16 matrices are 2x faster,
    bf16 is told it is slower only where they are slower."""
    factor = runtime.cpu_bf16_speedup()
    assert factor > 0 and runtime.cpu_bf16_speedup() == factor
    assert (runtime.cpu_precision_advice("no") is not None) == (factor >= runtime.BF16_ADVICE_FACTOR)
    assert (runtime.cpu_precision_advice("bf16") is not None) == (factor < 1.0)
    assert runtime.cpu_precision_advice("fp16") is None  # a CPU refuses fp16 elsewhere, in one line


@pytest.mark.parametrize(
    ("features", "factor", "precision", "expected"),
    [
        (
            ["AMX"],
            6.7,
            "no",
            "this CPU (AMX) multiplies bf16 matrices 6.7x faster than fp32 (measured): it would "
            "train faster with --mixed-precision bf16",
        ),
        ([], 0.2, "bf16", "this CPU (no AMX or AVX-512 BF16) multiplies bf16 matrices at 0.20x fp32's speed"),
        (["AVX-512 BF16"], 1.5, "no", None),  # faster matrices, but not enough to speed up a step
        (["AMX"], 6.7, "bf16", None),
    ],
)
def test_precision_advice_says_the_factor_and_the_flag(monkeypatch, features, factor, precision, expected):
    monkeypatch.setattr(runtime, "cpu_bf16_features", lambda: features)
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: factor)
    advice = runtime.cpu_precision_advice(precision)
    assert advice is None if expected is None else expected in advice and advice.startswith("note: ")


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's state is one per process and refuses a second precision: cleared around the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_cpu_run_prints_the_advice_once_in_its_precision(capsys, fresh_accelerate_state):
    accelerator = runtime.make_accelerator(cpu=True, mixed_precision="bf16")
    assert accelerator.mixed_precision == "bf16"
    advice = runtime.cpu_precision_advice("bf16")
    assert capsys.readouterr().out.count("note: this CPU") == (advice is not None)
