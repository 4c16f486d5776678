"""The Accelerator every command builds: every launched process seen (also without a GPU), engine
settings that cannot work refused before any work, and failed collectives as one line."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path

from launch.errors import UserError

from .devices import has_accelerator_device
from .precision import cpu_precision_advice
from .processes import launched_engine, launched_processes


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
        shipped = Path(__file__).parents[1] / "configs" / Path(named).name
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
    launched, engine = launched_processes(), launched_engine()
    if not has_accelerator_device():
        # DeepSpeed, imported by Accelerate's checkpoint code even in runs that do not use it, would
        # otherwise warn "Setting accelerator to CPU" after failing to find a GPU: we know there is none.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not has_accelerator_device() and launched > 1:
        if engine == "FSDP":
            # Accelerate turns FSDP on only over a GPU-like process group; on CPUs every rank would
            # silently train alone (distributed type NO). Checked with accelerate 1.15.
            raise UserError(
                "FSDP runs only on GPUs under Accelerate: on CPUs use DDP (launch/configs/multi_gpu.yaml with "
                "--mixed_precision no) or DeepSpeed ZeRO-3 (launch/configs/deepspeed_zero3.yaml), which also shards"
            )
        if engine == "DeepSpeed":
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
