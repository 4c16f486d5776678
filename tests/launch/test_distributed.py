"""Several real processes through `accelerate launch` on the CPU: DDP over gloo, two "machines" on
loopback, torchrun's restarts after a killed rank, a hung rank, and signals through the launcher.
(DeepSpeed, a GPU path that runs on CPUs too, is in tests/gpu/test_engines.py.)"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launch.checkpoints.restoring import read_trainer_state
from launch.settings.config import SMOKE_DATA
from tests.helpers import (
    PYTHON,
    child_env,
    free_port,
    invoke,
    launch_two,
    losses,
    outcome,
    run_cli,
    tiny_run_options,
)
from tests.launch.training.test_optim import expected_lr

pytestmark = pytest.mark.slow


def test_two_processes_split_the_data_and_agree(tmp_path):
    run_cli(launch_two("tests/launch/dist_probe.py", str(tmp_path), str(SMOKE_DATA)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for epoch in ("0", "1"):
        a, b = ranks[0]["rows"][epoch], ranks[1]["rows"][epoch]
        assert a and len(a) == len(b)
        seen = [row for batch in a + b for row in batch]
        assert len(seen) == len({tuple(r) for r in seen}), "a row was given to both processes"
        assert len(seen) == ranks[0]["dataset_len"] // 4 * 4  # the epoch covers the data once (full batches)
    assert ranks[0]["rows"]["0"] != ranks[0]["rows"]["1"], "each epoch is shuffled anew"
    assert ranks[0]["test"] == ranks[1]["test"], "the final metrics are the same on every process"
    run = tmp_path / "run"
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert steps == sorted(set(steps)), "one set of logs, written once"
    assert json.loads((run / "summary.json").read_text())["hardware"]["processes"] == 2


# ---- past one machine, on one host -------------------------------------------------------------------
def two_process_run(out: Path, *launcher_flags, extra=()) -> list[str]:
    """`accelerate launch` of a tiny two-process CPU run with the given launcher flags, in bf16 (what
    launch/configs/multi_gpu.yaml ships with): DDP's restarts and multi-machine runs are checked in bf16."""
    return launch_two(
        *launcher_flags,
        "-m",
        "launch.cli",
        "train",
        *tiny_run_options(out, "--max-steps", "6", "--log-every", "1", *extra),
        precision="bf16",
    )


def worker(launcher: subprocess.Popen, rank: int):
    """The training process of `rank` under a launcher (found by its RANK), as a psutil.Process."""
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK", "0") == str(rank) and "launch.cli" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no rank {rank} under the launcher")


def start(args: list[str], log: Path, env=None) -> subprocess.Popen:
    """A launcher in the background in its own process group, its output to a file (a pipe nobody
    reads would fill and block it)."""
    return subprocess.Popen(
        args, env=child_env(env), stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(launcher: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    try:
        launcher.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        launcher.kill()
        raise AssertionError(
            f"the launcher did not end in {timeout} s:\n{log.read_text(errors='replace')[-4000:]}"
        ) from None
    return log.read_text(errors="replace")


def wait_for(path: Path, launcher: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert launcher.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


# Long enough that a rank killed once step 8 is saved still has steps left to restart for.
ELASTIC = ("--max-steps", "20", "--save-every", "4", "--resume", "auto", "--epochs", "8")


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory):
    """An ELASTIC run of two processes on one host, never interrupted."""
    out = tmp_path_factory.mktemp("two-process") / "run"
    run_cli(two_process_run(out, extra=ELASTIC))
    return out


def test_two_machines_on_loopback_train_as_one_two_process_host(tmp_path, two_process_reference):
    """Machine 0 and machine 1 (one process each) over 127.0.0.1 = the same run on one 2-process host."""
    multi = tmp_path / "multi" / "run"
    logs, port = [tmp_path / f"machine{rank}.log" for rank in (0, 1)], free_port()
    nodes = [
        start(
            two_process_run(
                multi,
                "--num_machines",
                "2",
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                str(port),
                extra=ELASTIC,
            ),
            logs[rank],
        )
        for rank in (0, 1)
    ]
    outputs = [finish(node, log) for node, log in zip(nodes, logs, strict=True)]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "train: 2 process(es)" in outputs[0]
    assert json.loads((multi / "summary.json").read_text())["hardware"]["processes"] == 2
    assert outcome(multi) == outcome(two_process_reference)  # same seed, same data per rank: bit for bit
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["best", "step-0000016", "step-0000020"]


def test_a_killed_rank_restarts_the_group_from_the_last_checkpoint(tmp_path, two_process_reference):
    """torchrun's --max_restarts with --resume auto: SIGKILL one rank mid-run; the group restarts and
    ends with exactly the losses of a run never interrupted."""
    plain = two_process_reference
    out = tmp_path / "elastic" / "run"
    log = tmp_path / "elastic.log"
    launcher = start(
        two_process_run(
            out,
            "--max_restarts",
            "1",
            "--monitor_interval",
            "1",
            "--rdzv_backend",
            "c10d",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(free_port()),
            extra=ELASTIC,
        ),
        log,
        env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"},
    )
    wait_for(out / "checkpoints" / "step-0000008", launcher)
    worker(launcher, 1).send_signal(signal.SIGKILL)
    output = finish(launcher, log)
    assert launcher.returncode == 0, output[-4000:]
    assert output.count("resume: ") >= 3  # twice "starting from scratch", then each rank resumes
    assert outcome(out) == outcome(plain)
    assert losses(out) == losses(plain)


def test_restarts_without_a_fresh_store_are_refused_in_one_line(tmp_path):
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": ""}
    result = run_cli(two_process_run(tmp_path / "run", "--max_restarts", "1"), env=env, check=False, timeout=300)
    assert result.returncode != 0 and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_hung_rank_ends_the_run_after_the_collective_timeout(tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "run.log"
    launcher = start(
        two_process_run(
            out, extra=("--max-steps", "40", "--epochs", "8", "--save-every", "4", "--collective-timeout", "4")
        ),
        log,
    )
    wait_for(out / "checkpoints" / "step-0000004", launcher)
    waiting, hung = worker(launcher, 0), worker(launcher, 1)
    hung.send_signal(signal.SIGSTOP)  # alive, holding its sockets, answering nothing
    try:
        waiting.wait(timeout=120)  # rank 0 gives up after the collective timeout, with its error
        # The launcher then stops the hung rank; a stopped process only dies to SIGKILL, which
        # torchrun sends after its 30 s grace period. Here it is sent at once, as an operator would.
        hung.kill()
        output = finish(launcher, log, timeout=180)
    finally:
        if hung.is_running():
            hung.kill()
    assert launcher.returncode != 0
    assert (
        "[rank 0] error: a collective operation timed out: another process stopped responding "
        "(--collective-timeout 4 s); this process (rank 0) stops" in output
    )


def test_sigterm_to_a_single_process_launcher_checkpoints_instead_of_orphaning(tmp_path):
    """`accelerate launch` (one process) dies on SIGTERM without forwarding it; the training process
    follows it (PR_SET_PDEATHSIG), saves where it is, and the run resumes from there."""
    out = tmp_path / "run"
    args = [
        "accelerate",
        "launch",
        "--config_file",
        "launch/configs/cpu.yaml",
        "-m",
        "launch.cli",
        "train",
        *tiny_run_options(out, "--max-steps", "60", "--epochs", "20", "--log-every", "1", "--save-every", "4"),
    ]
    launcher = start(args, tmp_path / "run.log")
    wait_for(out / "checkpoints" / "step-0000004", launcher)
    training = worker(launcher, 0)
    launcher.send_signal(signal.SIGTERM)  # as a scheduler or `kill` would
    finish(launcher, tmp_path / "run.log", timeout=60)
    training.wait(timeout=60)  # it stops: no orphan keeps training
    saved = sorted((out / "checkpoints").glob("step-*"))[-1]
    state = read_trainer_state(saved)
    assert 4 <= state["step"] < 60 and not state.get("finished")
    resumed = invoke(*args[6:], "--resume", "auto", check=True)  # the same `train` command, in this process
    assert "resume: " in resumed.stdout and json.loads((out / "summary.json").read_text())["steps"] == 60


def test_fsdp2_shards_the_tied_model_and_resumes_exactly_on_two_cpu_processes(tmp_path):
    """FSDP2 itself (fully_shard over gloo), in fp32 and under a bf16 MixedPrecisionPolicy; Accelerate's
    FSDP path needs GPUs, see fsdp2_probe.py."""
    run_cli(
        [
            PYTHON,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "tests/launch/fsdp2_probe.py",
            tmp_path,
        ]
    )
    both = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # fp32 matches the unsharded model to rounding; bf16 compute (8-bit mantissa) to within 2 %
    for precision, tolerance in (("fp32", 1e-5), ("bf16", 2e-2)):
        ranks = [r[precision] for r in both]
        for r in ranks:
            assert r["tied"], "the head must stay the embedding's parameter under fully_shard"
            assert r["loss_diff"] < tolerance, (precision, r["loss_diff"])
            assert r["grad_max_diff"] < tolerance, (precision, "fused-head gradients differ from the unsharded model's")
            assert r["resumed"] == r["continued"], (precision, "the sharded checkpoint did not resume exactly")
        assert sum(r["sharded_rows"] for r in ranks) == ranks[0]["rows"] > ranks[0]["sharded_rows"]
        assert ranks[0]["best_matches"]


def test_accelerate_fsdp_on_cpus_is_refused_instead_of_training_each_rank_alone(tmp_path):
    result = run_cli(
        [
            "accelerate",
            "launch",
            "--config_file",
            "launch/configs/fsdp2.yaml",
            "--num_processes",
            "2",
            "--mixed_precision",
            "no",
            "-m",
            "launch.cli",
            "train",
            *tiny_run_options(tmp_path / "run"),
        ],
        check=False,
        timeout=300,
    )
    assert result.returncode != 0 and "error: FSDP runs only on GPUs under Accelerate" in result.stderr


def test_sigterm_to_every_process_as_slurm_sends_it_saves_once_on_every_rank(tmp_path):
    """Slurm (and Ctrl-C in a terminal) signal the launcher and the workers alike: every rank saves
    the same step once and stops. (A repeat of the signal is one request: test_runtime.py.)"""
    out, log = tmp_path / "run", tmp_path / "run.log"
    launcher = start(two_process_run(out, extra=("--max-steps", "60", "--epochs", "20", "--save-every", "4")), log)
    wait_for(out / "checkpoints" / "step-0000004", launcher)
    os.killpg(launcher.pid, signal.SIGTERM)
    output = finish(launcher, log, timeout=120)
    assert output.count("SIGTERM received: saved step") == 2, output[-3000:]  # each rank says it once
    steps = {int(part.split(";")[0]) for part in output.split("SIGTERM received: saved step ")[1:]}
    assert len(steps) == 1, steps  # the same step on both ranks
    assert "interrupted twice" not in output
    saved = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert not read_trainer_state(saved).get("finished")


def test_a_failing_launch_with_q_shows_our_one_line_and_no_traceback(tmp_path):
    """`accelerate launch -q`: Accelerate's own CalledProcessError traceback stays out of the way."""
    options = tiny_run_options(tmp_path / "run", "--lr", "-1")
    result = run_cli(
        [
            "accelerate",
            "launch",
            "-q",
            "--config_file",
            "launch/configs/cpu.yaml",
            "-m",
            "launch.cli",
            "train",
            *options,
        ],
        check=False,
        timeout=120,
    )
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode != 0 and len(errors) == 1 and "--lr must be > 0" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


# ---- a resume on another number of processes ---------------------------------------------------------
RESIZED = ("--max-steps", "12", "--log-every", "1", "--save-every", "3", "--warmup-steps", "2", "--min-lr", "3e-4")


def test_a_run_resumes_on_another_number_of_processes_at_the_same_tokens_per_step(tmp_path):
    """1 process -> 2 -> 1, as a preempted job that comes back on other hardware: each session
    continues the run (weights, optimizer, schedule position, tokens seen) with --grad-accum taking
    up the difference, says so in one line, and the run ends at its planned step."""
    out = tmp_path / "run"
    invoke("train", *tiny_run_options(out, *RESIZED, "--stop-after-steps", "6"), check=True)  # accumulation 2
    two = run_cli(
        launch_two("-m", "launch.cli", "train", *tiny_run_options(out, *RESIZED, "--resume", "auto"))
        + ["--stop-after-steps", "3"]
    )
    said = two.stdout + two.stderr
    assert said.count("resume: the checkpoint was saved by 1 process(es), this launch has 2") == 1, said
    assert "--grad-accum 2 -> 1 keeps the tokens per optimizer step" in said and "no longer bit-exact" in said
    assert "= 128 tokens per optimizer step, 12 steps" in said  # the plan of the 1-process session
    assert "(step 6, epoch 1, batch 6 of 14)" in said  # 12 of 28 micro-batches with one process
    one = invoke("train", *tiny_run_options(out, *RESIZED, "--resume", "auto"), check=True)
    assert "saved by 2 process(es), this launch has 1: --grad-accum 1 -> 2" in one.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["hardware"]["processes"] == 1
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))  # each step once, none lost or repeated
    assert [r["tokens"] for r in train] == [128 * s for s in range(1, 13)]
    # the schedule did not move: each step's learning rate is the 12-step plan's (the smoke run's lr 3e-3, cosine)
    planned = [expected_lr("cosine", s - 1, lr=3e-3, min_lr=3e-4, warmup=2, total=12) for s in range(1, 13)]
    assert [r["lr"] for r in train] == pytest.approx(planned, rel=1e-12)
    assert json.loads((out / "train_config.json").read_text())["grad_accum"] == 2


def test_a_resume_on_a_process_count_that_cannot_keep_the_step_is_one_line(tmp_path):
    """One process with --grad-accum 1 cannot be shared by two at the same tokens per step; a
    DeepSpeed launch keeps a shard per process. Both refused in one line naming both counts, every
    file of the run as it was."""
    from tests.helpers import tree_digest

    out = tmp_path / "run"
    invoke("train", *tiny_run_options(out, "--max-steps", "4", "--grad-accum", "1", "--stop-after-steps", "2"))
    before = tree_digest(out)
    result = run_cli(
        launch_two("-q", "-m", "launch.cli", "train", *tiny_run_options(out, "--resume", "auto")), check=False
    )
    errors = {line.split("error: ", 1)[1] for line in result.stderr.splitlines() if "error: " in line}  # per rank
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    error = errors.pop()
    assert "was saved by 1 process(es) and this launch has 2" in error and "cannot be shared evenly" in error
    assert tree_digest(out) == before
    # DeepSpeed's launcher sets these; the refusal comes before Accelerate or DeepSpeed start
    deepspeed = invoke(
        "train",
        *tiny_run_options(out, "--resume", "auto"),
        env={"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"},
    )
    assert deepspeed.exit_code == 2 and "saved by 1 process(es) and this launch has 2: DeepSpeed" in deepspeed.stderr
    assert tree_digest(out) == before
