"""launch/runtime/processes.py: how signals are read, in this process and in a run that receives them."""

import os
import signal
import time

import pytest

from launch.runtime.processes import StopSignal
from tests.faults import start, train, train_args, wait_for_step
from tests.helpers import REFERENCE, outcome


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
