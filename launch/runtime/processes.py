"""What every process of a run shares with the others and its launcher: signals (stop at the next
step, a second one at once), dying with the launcher, one decision for all processes, rank-named output."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import torch


class TrainingInterrupted(Exception):
    """A run stopped by a signal after saving; the CLI prints the message and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def launched_processes() -> int:
    """The processes this launch runs (accelerate launch / torchrun set WORLD_SIZE; 1 without them),
    known before any Accelerator exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_engine() -> str | None:
    """ "DeepSpeed" or "FSDP" when `accelerate launch` started this process under one (it says so in
    the environment before any Accelerator exists), else None."""
    for engine in ("DeepSpeed", "FSDP"):
        if os.environ.get(f"ACCELERATE_USE_{engine.upper()}", "false").lower() == "true":
            return engine
    return None


def rank_prefix() -> str:
    """ "[rank N] " in a multi-process run (the launcher sets RANK and WORLD_SIZE), else ""."""
    return f"[rank {os.environ.get('RANK', '0')}] " if launched_processes() > 1 else ""


def rank_print(message: str) -> None:
    """Print what every process must say (e.g. what it waits for), prefixed with its rank."""
    print(rank_prefix() + message, flush=True)


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next optimizer step and exits.
    A second signal stops at once (KeyboardInterrupt). Use as a context manager.

    A repeat within `DUPLICATE_S` is the same request delivered twice, not a second one: Slurm and a
    Ctrl-C signal every process of the job, and torchrun then forwards the same signal to its
    workers, so each worker receives it twice within milliseconds and must still save.
    """

    DUPLICATE_S = 0.5

    def __init__(self):
        self.signum = None
        self.received_at = 0.0
        self.previous = {}

    def __enter__(self) -> StopSignal:
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        follow_launcher()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self.signum is not None:
            if now - self.received_at < self.DUPLICATE_S:
                return  # the launcher forwarding what we already got
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum, self.received_at = signum, now

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports it; 143 (SIGTERM's) when another process was signalled."""
        return 128 + self.signum if self.signum else 143


def follow_launcher() -> None:
    """Under `accelerate launch`, have Linux send us SIGTERM if the launcher dies.

    A single-process `accelerate launch` does not forward SIGTERM: killed, it leaves the training
    process running as an orphan that nobody will stop. With PR_SET_PDEATHSIG the launcher's death
    becomes our SIGTERM, so the run checkpoints and exits as if it had been sent to us. Only under
    the launcher: a process started from a shell (nohup included) must outlive that shell.
    """
    if sys.platform != "linux" or "ACCELERATE_DYNAMO_BACKEND" not in os.environ:  # set by `accelerate launch`
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the launcher died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def free_port() -> int:
    """A TCP port free on this machine now, for a launcher's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fault_point(name: str) -> None:
    """Die here, as by kill -9, when GPT_LAUNCH_FAULT names this point: the fault tests' way to
    interrupt a run at an exact moment (mid-checkpoint, mid-test) that a timed kill would only hit
    by luck."""
    if os.environ.get("GPT_LAUNCH_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def any_process(accelerator, *flags: bool) -> list[bool]:
    """Each flag, true on every process if it is true on any, in one all-reduce: all processes must
    take the same decision at the same step (stop, and checkpoint, together)."""
    if accelerator.num_processes == 1:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=accelerator.device)
    return [v > 0 for v in accelerator.reduce(t, reduction="sum").tolist()]
