"""The machine a run lands on: the Accelerator, devices, signals and decisions shared by processes."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch

from launch.errors import UserError


class TrainingInterrupted(Exception):
    """A run stopped by a signal after saving; the CLI prints the message and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def rank_prefix() -> str:
    """ "[rank N] " in a multi-process run (the launcher sets RANK and WORLD_SIZE), else ""."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""


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


def has_accelerator_device() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


def resolve_device(choice: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one (and Accelerate is not told to use the CPU), else the CPU;
    anything else as torch spells it."""
    if choice == "auto":
        forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
        return torch.device("cuda" if torch.cuda.is_available() and not forced_cpu else "cpu")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, sizes=None, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` square matmuls at each size: the best this device really
    reaches. Taking the best makes MFU conservative (a slow moment lowers MFU, never raises it)."""
    # A CPU reaches its peak by 2048 (4096 measured the same here, in 8x the time); a GPU needs more work.
    sizes = sizes or ((4096, 8192) if device.type == "cuda" else (1024, 2048))
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b  # warm-up
        synchronize(device)
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


CPU_BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16", "bf16": "Arm BF16"}


def cpu_bf16_features() -> list[str]:
    """This CPU's bf16 matrix hardware (Intel AMX, AVX-512 BF16, Arm's BF16 extension), read from the
    kernel's CPU flags. Without any, bf16 still works, emulated, and slower than fp32. Unknown (not
    Linux): none, so nothing is assumed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return [name for flag, name in CPU_BF16_FLAGS.items() if flag in flags]


@functools.cache
def cpu_bf16_speedup() -> float:
    """bf16 matrix products' speed over fp32's on this CPU, measured (512-square, best of 5 each:
    ~0.1 s). The flags say what hardware there is; only a measurement says what it is worth."""
    cpu = torch.device("cpu")
    return measure_matmul_peak(cpu, torch.bfloat16, (512,)) / measure_matmul_peak(cpu, torch.float32, (512,))


def cpu_bf16_line(features: list[str], speedup: float) -> str:
    """The line `info` and `bench` print of this CPU's bf16 hardware and what it measured."""
    return (
        f"bf16 matrix hardware: {', '.join(features) or 'none (no AMX, AVX-512 BF16)'}; "
        f"bf16 matmul {speedup:.2f}x fp32 (measured)"
    )


# A step is more than its matrix products: with them 6.7x faster in bf16, a `paper` step was 1.44x
# (issue 34's AMX machine). Below 2x the gain would be lost in the rest, so nothing is advised.
BF16_ADVICE_FACTOR = 2.0


def cpu_precision_advice(precision: str) -> str | None:
    """One line when this CPU would train faster in the other precision ("no" or "bf16"), with the
    measured factor of its bf16 matrix products over fp32's; None when it would not."""
    if precision not in ("no", "bf16"):
        return None
    factor, features = cpu_bf16_speedup(), cpu_bf16_features()
    hardware = ", ".join(features) if features else "no AMX or AVX-512 BF16"
    if precision == "no" and factor >= BF16_ADVICE_FACTOR:
        return (
            f"note: this CPU ({hardware}) multiplies bf16 matrices {factor:.1f}x faster than fp32 (measured): "
            "it would train faster with --mixed-precision bf16"
        )
    if precision == "bf16" and factor < 1.0:
        return (
            f"note: this CPU ({hardware}) multiplies bf16 matrices at {factor:.2f}x fp32's speed (measured): "
            "bf16 trains slower here than --mixed-precision no"
        )
    return None


def supports_precision(device: torch.device, precision: str) -> bool:
    """Whether `precision` ("no", "bf16", "fp16") runs at its speed on `device`: fp16 needs a GPU;
    bf16 a GPU that has it, or a CPU with bf16 matrix hardware."""
    if precision == "no":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    return device.type == "cpu" and precision == "bf16" and bool(cpu_bf16_features())


PRECISION_NAMES = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def choose_precision(device: torch.device, asked: str | None, trained: str | None) -> tuple[str, str]:
    """The precision `evaluate` and `generate` run in, and why: `asked` (--mixed-precision) if given,
    else what the weights were trained in (`trained`) where this device supports it, else fp32."""
    if asked is not None:
        if device.type == "cpu" and asked == "fp16":
            raise UserError(
                "--mixed-precision fp16 needs a GPU (CPUs have no fp16 matrix kernels worth using); "
                "use --mixed-precision bf16 or no"
            )
        if device.type == "cuda" and asked == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--mixed-precision bf16: {device_name(device)} has no bf16; use fp16 or no")
        return asked, f"{PRECISION_NAMES[asked]}, as --mixed-precision asks"
    trained = trained or "no"
    if supports_precision(device, trained):
        return trained, f"{PRECISION_NAMES[trained]}, as the weights were trained"
    return "no", (
        f"fp32: the weights were trained in {trained}, which {device_name(device)} does not run at speed; "
        f"--mixed-precision {trained} asks for it anyway"
    )


def available_device(choice: str, flag: str = "--device") -> torch.device:
    """`choice` (auto, cpu, cuda, cuda:N) as a device this machine has; else one line saying what it has."""
    try:
        device = resolve_device(choice)
    except RuntimeError:
        raise UserError(f"{flag} {choice} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise UserError(f"{flag} {choice}: this machine has {have}; use {flag} cpu, or auto")
    if device.type not in ("cpu", "cuda") and not has_accelerator_device():
        raise UserError(f"{flag} {choice}: this machine has no {device.type} device; use {flag} cpu, or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def check_elastic_launch() -> None:
    """torchrun's restarts (`--max_restarts`) reuse the rendezvous store, and with it the previous
    attempt's addresses: the restarted group then fails to connect (gloo) or hangs. Found here with
    torch 2.13; pytorch/pytorch#135712 names the cause and the switch that avoids it."""
    if (
        int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
        and os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") != "1"
    ):
        raise UserError(
            "--max_restarts needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in the launcher's environment, or "
            "the restarted processes cannot reconnect: `export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`, "
            "then launch again"
        )


TIMED_OUT = "a collective operation timed out: another process stopped responding"
COLLECTIVE_FAILURES = (  # what gloo/NCCL say -> what happened, for a one-line message; first match wins
    (
        ("connectfullmesh failed",),
        "could not connect to the other processes (one is down, or a restart reused a "
        "stale rendezvous: see TORCH_DISABLE_SHARE_RDZV_TCP_STORE in docs/scaling-out.md)",
    ),
    (("timed out", "timeout"), TIMED_OUT),
    (
        ("connection closed by peer", "connection reset by peer"),
        "lost the connection to another process (it probably crashed: see its log)",
    ),
)


def collective_failure(error: BaseException, timeout_s: float) -> UserError | None:
    """A one-line UserError naming this rank for a failed collective, or None for any other error."""
    text = str(error).lower()
    for needles, what in COLLECTIVE_FAILURES:
        if any(needle in text for needle in needles):
            waited = f" (--collective-timeout {timeout_s:g} s)" if what is TIMED_OUT else ""
            return UserError(
                f"{what}{waited}; this process (rank {os.environ.get('RANK', '0')}) stops. Continue from "
                "the last checkpoint with --resume auto (or launch with --max_restarts to do it "
                "automatically)"
            )
    return None


def find_shipped_deepspeed_config() -> None:
    """The shipped DeepSpeed YAMLs name their JSON as `launch/configs/ds_zero*.json`, a path relative to the
    repository root, which is all Accelerate's YAML can hold. Launched from any other folder, the
    JSON that ships beside them in this package is meant: point Accelerate at it."""
    named = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if named and not Path(named).is_file():
        shipped = Path(__file__).parent / "configs" / Path(named).name
        if Path(named).parent == Path("launch/configs") and shipped.is_file():
            os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(shipped)


def check_compile(accelerator, compile: bool) -> None:
    """torch.compile under DeepSpeed ZeRO-3 fails at the first step: ZeRO-3 partitions each parameter
    between the forward's hooks, and the compiled graph sees a parameter of size 0 (dynamo: "size
    mismatch ... vec (0)"). ZeRO-2 keeps parameters whole and compiles."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if compile and plugin is not None and plugin.zero_stage == 3:
        raise UserError(
            "--compile cannot run under DeepSpeed ZeRO-3, which partitions the parameters the compiled step reads; "
            "drop --compile (--no-compile on a resume), or launch with ZeRO-2 (launch/configs/deepspeed_zero2.yaml)"
        )


def make_accelerator(collective_timeout_s: float = 1800, **kwargs):
    """An Accelerator that sees every process, also on a machine without a GPU.

    Under `accelerate launch --multi_gpu` (torchrun) on a CPU-only machine, Accelerate takes the run
    for multi-process only when told the device is the CPU, and DeepSpeed only when given the gloo
    backend explicitly; otherwise each rank silently trains alone as "process 0 of 1".
    Every collective waits at most `collective_timeout_s`, so a hung peer ends the run with an error.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    check_elastic_launch()
    find_shipped_deepspeed_config()
    timeout = timedelta(seconds=collective_timeout_s)
    kwargs["kwargs_handlers"] = [*kwargs.get("kwargs_handlers", []), InitProcessGroupKwargs(timeout=timeout)]
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if not has_accelerator_device():
        # DeepSpeed, imported by Accelerate's checkpoint code even in runs that do not use it, would
        # otherwise warn "Setting accelerator to CPU" after failing to find a GPU: we know there is none.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not has_accelerator_device() and launched > 1:
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            # Accelerate turns FSDP on only over a GPU-like process group; on CPUs every rank would
            # silently train alone (distributed type NO). Checked with accelerate 1.15.
            raise UserError(
                "FSDP runs only on GPUs under Accelerate: on CPUs use DDP (launch/configs/multi_gpu.yaml with "
                "--mixed_precision no) or DeepSpeed ZeRO-3 (launch/configs/deepspeed_zero3.yaml), which also shards"
            )
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            PartialState(backend="gloo", timeout=timeout)
        else:
            kwargs["cpu"] = True
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != launched or (launched > 1 and accelerator.distributed_type == DistributedType.NO):
        raise UserError(
            f"the launcher started {launched} processes but Accelerate runs {accelerator.num_processes} "
            f"({accelerator.distributed_type.value}); "
            "launch with `accelerate launch --multi_gpu --num_processes N` (or one of launch/*.yaml)"
        )
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "fp16":
        raise UserError(
            "fp16 mixed precision needs a GPU (on a CPU it runs ~40x slower than fp32); "
            "use --mixed-precision no, or bf16 on a CPU with AVX-512 BF16/AMX"
        )
    if accelerator.device.type == "cpu" and accelerator.is_main_process:
        advice = cpu_precision_advice(accelerator.mixed_precision)
        if advice:
            accelerator.print(advice)
    return accelerator


@contextlib.contextmanager
def collective_errors(timeout_s: float):
    """A collective that timed out or lost its peer becomes one line naming this rank, not a traceback."""
    try:
        yield
    except RuntimeError as e:
        failure = collective_failure(e, timeout_s)
        if failure is None:
            raise
        raise failure from None
