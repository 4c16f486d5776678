"""DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch` with the shipped configs as they are (bf16):
two processes on a CPU, one on a GPU. Each trains straight through, and paused then resumed; under
DeepSpeed, `accelerator.backward` takes the optimizer step itself, so the learning rate each update
really applied is recorded as it is applied (lr_probe.py) and checked against the schedule's formula."""

import json
import os

import pytest
import torch

from gpt_core import get_preset, load_pretrained
from tests.gpu.conftest import device_env, same_run
from tests.helpers import deepspeed_run, outcome, records, run_cli
from tests.launch.training.test_optim import expected_lr

pytestmark = pytest.mark.slow

SCHEDULE = ("--schedule", "linear", "--lr", "1e-2", "--min-lr", "1e-3", "--warmup-steps", "2", "--log-every", "1")


@pytest.fixture(scope="session", params=[2, 3], ids=lambda stage: f"zero{stage}")
def deepspeed_runs(request, device, tmp_path_factory):
    """Straight through (with the lr observer), and paused at step 2 then resumed, under one ZeRO stage."""
    stage, root = request.param, tmp_path_factory.mktemp(f"zero{request.param}-{device.type}")
    config, processes = f"launch/configs/deepspeed_zero{stage}.yaml", 2 if device.type == "cpu" else 1
    env = {**device_env(device, launched=True), "LR_PROBE_OUT": str(root / "applied.json")}
    straight = run_cli(
        deepspeed_run(config, root / "straight", *SCHEDULE, processes=processes, script="tests/gpu/lr_probe.py"),
        env=env,
    )
    resumed = deepspeed_run(config, root / "resumed", *SCHEDULE, processes=processes)
    paused = run_cli(resumed + ["--stop-after-steps", "2"], env=env)
    assert "paused at step 2" in paused.stdout + paused.stderr
    run_cli(resumed + ["--resume", "auto"], env=env)
    return {"stage": stage, "processes": processes, "root": root, "log": straight.stdout}


def test_deepspeed_trains_in_bf16_as_shipped_and_resumes_exactly(device, deepspeed_runs):
    root = deepspeed_runs["root"]
    assert f"train: {deepspeed_runs['processes']} process(es)" in deepspeed_runs["log"]
    same_run(device, outcome(root / "resumed"), outcome(root / "straight"))
    summary = json.loads((root / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["hardware"]["mixed_precision"] == "bf16"
    assert summary["hardware"]["processes"] == deepspeed_runs["processes"]
    model = load_pretrained(root / "resumed" / "checkpoints" / "best")  # gathered from the shards
    assert model.num_params() == get_preset("tiny").num_params()


def test_deepspeed_applies_the_schedules_learning_rate_at_every_step(deepspeed_runs):
    root = deepspeed_runs["root"]
    calls = json.loads((root / "applied.json").read_text())  # each call's lrs, one per group stepped
    logged = [r["lr"] for r in records(root / "straight", "train")]
    formula = [expected_lr("linear", step, lr=1e-2, min_lr=1e-3, warmup=2, total=4) for step in range(4)]
    assert logged == pytest.approx(formula, rel=1e-12)
    # DeepSpeed steps AdamW in the same number of calls at every update (ZeRO-2: one per group; ZeRO-3
    # in bf16: each call all groups, twice); every call of update k applies the lr of step k: update 1
    # warms up, and none takes the previous step's lr
    per_update = len(calls) // len(formula)
    assert per_update >= 1 and len(calls) == per_update * len(formula)
    for k, lr in enumerate(formula):
        applied = [value for call in calls[k * per_update : (k + 1) * per_update] for value in call]
        assert applied == pytest.approx([lr] * len(applied), rel=1e-12), k


def test_deepspeed_shards_the_optimizer_state_and_with_zero3_the_parameters(deepspeed_runs):
    stage, processes = deepspeed_runs["stage"], deepspeed_runs["processes"]
    step = deepspeed_runs["root"] / "resumed" / "checkpoints" / "step-0000004" / "state" / "pytorch_model"
    optimizer_files = sorted(step.glob("*optim_states.pt"))  # in bf16: bf16_zero_pp_rank_<r>_...
    assert [f.name.split("zero_pp_rank_")[1][0] for f in optimizer_files] == [str(r) for r in range(processes)]
    parameters = get_preset("tiny").num_params()
    for shard in optimizer_files:  # each rank holds its share of the fp32 master weights (and the moments)
        state = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        partition = state["single_partition_of_fp32_groups"] if stage == 2 else state["fp32_flat_groups"]
        assert abs(sum(t.numel() for t in partition) - parameters / processes) <= 64 * processes
    model_files = sorted(p.name for p in step.glob("*model_states.pt"))
    expected = (
        [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(processes)]
        if stage == 3
        else ["mp_rank_00_model_states.pt"]
    )
    assert model_files == expected, os.listdir(step)


def test_muon_under_deepspeed_is_refused_in_one_line_before_any_work(tmp_path):
    """DeepSpeed replaces the optimizer with its own and has no Muon: refused at the start, the run
    folder left as it was."""
    launch = deepspeed_run("launch/configs/deepspeed_zero2.yaml", tmp_path / "run", "--optimizer", "muon", processes=1)
    result = run_cli(launch, check=False, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "--optimizer muon cannot run here: DeepSpeed has no Muon; use --optimizer adamw" in errors[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "cache").exists()


def test_compile_under_zero3_is_refused_in_one_line_before_any_folder(tmp_path):
    """ZeRO-3 partitions the parameters the compiled step reads (dynamo fails at the first step):
    refused at the start, with nothing written, not after a folder a plain rerun would refuse."""
    launch = deepspeed_run("launch/configs/deepspeed_zero3.yaml", tmp_path / "run", "--compile", processes=1)
    result = run_cli(launch, check=False, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "--compile cannot run under DeepSpeed ZeRO-3" in errors[0] and "--no-compile on a resume" in errors[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
