"""launch/configs/slurm/train.sbatch: its command line everywhere, and under a real Slurm where one answers.

The second test needs a Slurm cluster on this host (slurmctld + slurmd, e.g. Debian's slurm-wlm with
one node); it skips where `sinfo` is absent or no controller answers, as in CI.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, child_env, launch_two, losses, run_cli, tiny_run_options

SCRIPT = REPO / "launch" / "configs" / "slurm" / "train.sbatch"


@pytest.mark.slow
def test_the_script_builds_one_launcher_per_node_with_c10d_rendezvous_and_resume():
    env = {
        "GPT_LAUNCH_DRY_RUN": "1",
        "SLURM_JOB_NUM_NODES": "4",
        "SLURM_JOB_NODELIST": "gpu[01-04]",
        "SLURM_JOB_ID": "123456",
        "GPUS_PER_NODE": "8",
        "MASTER_ADDR": "gpu01",
    }
    command = run_cli(["bash", SCRIPT, "--data", "/shared/tiny stories", "--lr", "3e-4"], env=env).stdout.strip()
    assert command.startswith("srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c exec accelerate launch")
    for part in (
        "--num_machines 4",
        "--num_processes 32",
        "--machine_rank $SLURM_NODEID",
        "--main_process_ip gpu01",
        "--main_process_port 29956",
        "--rdzv_backend c10d",
        "--max_restarts 2",
        "recipes/tinystories.py",
        "--resume auto",
        r"--data /shared/tiny\ stories --lr 3e-4",
    ):
        assert part in command, part
    text = SCRIPT.read_text()
    assert "#SBATCH --signal=TERM@120" in text and "#SBATCH --requeue" in text
    assert "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in text


def slurm_answers() -> bool:
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def job_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return out.split("JobState=")[1].split()[0] if "JobState=" in out else "GONE"


def wait_until(condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(
    not slurm_answers(), reason="no Slurm controller answers on this host (sbatch/sinfo absent or down)"
)
def test_a_preempted_job_saves_and_its_requeue_resumes_to_the_same_losses(tmp_path):
    out = tmp_path / "run"
    train_options = tiny_run_options(out, "--max-steps", "40", "--save-every", "4", "--epochs", "8", "--log-every", "1")
    env = child_env({"GPUS_PER_NODE": "2", "ACCELERATE_ARGS": "--mixed_precision no"})
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--cpus-per-task=2",
            "--gpus-per-node=0",
            f"--output={tmp_path}/job-%j.out",
            str(SCRIPT),
            *train_options,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    log = Path(tmp_path / f"job-{job}.out")
    try:
        wait_until(lambda: (out / "checkpoints" / "step-0000008").exists(), "the first checkpoints")
        subprocess.run(["scancel", "--signal=TERM", job], check=True)  # what --signal=TERM@120 sends
        wait_until(lambda: job_state(job) in ("FAILED", "COMPLETED", "CANCELLED"), "the preempted job to end")
        assert "SIGTERM received: saved step" in log.read_text(errors="replace")
        subprocess.run(["scontrol", "requeue", job], check=True)

        def finished() -> bool:
            state = job_state(job)
            if state == "PENDING":  # a requeued job waits ~2 min (its BeginTime); no need to here
                subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
            return state == "COMPLETED"

        wait_until(finished, "the requeued job to finish")
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    text = log.read_text(errors="replace")
    assert "restart 1" in text and "resume: " + str(out / "checkpoints" / "step-") in text
    plain = tmp_path / "plain" / "run"
    run_cli(
        launch_two(
            "-m",
            "launch.cli",
            "train",
            *tiny_run_options(plain, "--max-steps", "40", "--save-every", "4", "--epochs", "8", "--log-every", "1"),
        )
    )
    assert losses(out) == losses(plain)
    assert json.loads((out / "summary.json").read_text())["steps"] == 40


def test_the_sweep_array_script_runs_one_worker_per_task_on_the_given_study():
    """launch/configs/slurm/sweep.sbatch: every array task is a `gpt-launch sweep` worker with the
    flags given (the study's storage among them); outside an array it says what it needs."""
    script = REPO / "launch" / "configs" / "slurm" / "sweep.sbatch"
    flags = ["space.yaml", "--trials", "64", "--storage", "postgresql://sweeper@db/sweeps", "--preset", "small"]
    env = {"GPT_LAUNCH_DRY_RUN": "1", "SLURM_ARRAY_TASK_ID": "3"}
    out = run_cli(["bash", script, *flags], env=env).stdout.splitlines()
    assert out[0].startswith("sweep worker 3 on ") and out[1] == "gpt-launch sweep " + " ".join(flags)
    outside = run_cli(["bash", script, *flags], env={"GPT_LAUNCH_DRY_RUN": "1"}, check=False)
    assert outside.returncode != 0 and "run this under sbatch --array" in outside.stderr
    text = script.read_text()
    assert "#SBATCH --signal=TERM@120" in text and "exec gpt-launch sweep" in text
