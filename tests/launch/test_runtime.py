"""launch/runtime.py in-process: how signals are read."""

import os
import signal
import time

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
