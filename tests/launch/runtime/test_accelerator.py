"""launch/runtime/accelerator.py: the shipped DeepSpeed JSON found from anywhere, a dying peer ending the
run instead of hanging, and a CPU run's precision advice printed once."""

import os
import time
from pathlib import Path

import psutil
import pytest

from launch.runtime import accelerator as runtime_accelerator
from launch.runtime import precision as runtime_precision
from tests.faults import start, train_args, wait_for_step
from tests.helpers import launch_two


def test_a_shipped_deepspeed_config_is_found_from_any_folder(tmp_path, monkeypatch):
    """launch/configs/deepspeed_zero*.yaml name their JSON relative to the repository root; from elsewhere
    (a user's own project folder) the JSON shipped in the package is used."""
    import launch
    from launch.runtime.accelerator import find_shipped_deepspeed_config

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


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's state is one per process and refuses a second precision: cleared around the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_a_cpu_run_prints_the_advice_once_in_its_precision(capsys, fresh_accelerate_state):
    accelerator = runtime_accelerator.make_accelerator(cpu=True, mixed_precision="bf16")
    assert accelerator.mixed_precision == "bf16"
    advice = runtime_precision.cpu_precision_advice("bf16")
    assert capsys.readouterr().out.count("note: this CPU") == (advice is not None)
