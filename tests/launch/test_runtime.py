"""launch/runtime.py in-process: how signals are read."""

import os
import signal
import time
from pathlib import Path

import pytest

from launch.runtime import StopSignal


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
