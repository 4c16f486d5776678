"""Several real processes through `accelerate launch` on the CPU: DDP over gloo and DeepSpeed ZeRO-2."""

import json

import pytest
import torch

from launch.data import SMOKE_DATA
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def test_two_processes_split_the_data_and_agree(tmp_path):
    run_cli(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
             "tests/launch/dist_probe.py", str(tmp_path), str(SMOKE_DATA)])
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
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "train"]
    assert steps == sorted(set(steps)), "one set of logs, written once"
    assert json.loads((run / "summary.json").read_text())["hardware"]["processes"] == 2


def test_deepspeed_zero2_on_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["accelerate", "launch", "--config_file", "launch/deepspeed_zero2.yaml", "--num_processes", "2",
                    "--mixed_precision", "no", "recipes/tinystories.py", "--smoke", "--preset", "tiny", "--max-steps", "4",
                    "--output-dir", str(out), "--data-cache", str(tmp_path / "cache"), "--sample-tokens", "8"])
    assert "train: 2 process(es)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hardware"]["processes"] == 2 and summary["steps"] == 4
    # ZeRO-2 shards the optimizer: each rank stores its own half of the fp32 master weights + Adam moments.
    step = sorted((out / "checkpoints").glob("step-*"))[-1]
    shards = sorted((step / "state" / "pytorch_model").glob("zero_pp_rank_*_optim_states.pt"))
    assert [s.name[:14] for s in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"]
    full_optimizer_bytes = 3 * 4 * summary["model"]["parameters"]
    for shard in shards:
        state = torch.load(shard, map_location="cpu", weights_only=False)  # our own fresh file
        partition = state["optimizer_state_dict"]["single_partition_of_fp32_groups"]
        held = sum(t.numel() for t in partition)
        assert abs(held - summary["model"]["parameters"] / 2) <= 64, held
        assert shard.stat().st_size < 0.6 * full_optimizer_bytes


def test_deepspeed_zero3_shards_parameters_and_resumes(tmp_path):
    from gpt_core import get_preset, load_pretrained

    out = tmp_path / "run"
    args = ["accelerate", "launch", "--config_file", "launch/deepspeed_zero3.yaml", "--num_processes", "2",
            "--mixed_precision", "no", "recipes/tinystories.py", "--smoke", "--preset", "tiny", "--max-steps", "4",
            "--output-dir", str(out), "--data-cache", str(tmp_path / "cache"), "--sample-tokens", "8", "--log-every", "1"]
    paused = run_cli(args + ["--stop-after-steps", "2"])
    assert "paused at step 2" in paused.stdout + paused.stderr
    shards = sorted(p.name for p in (out / "checkpoints" / "step-0000002" / "state" / "pytorch_model").glob("*.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                      "zero_pp_rank_1_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    resumed = run_cli(args + ["--resume", "auto"])
    assert "resume: " in resumed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["hardware"]["processes"] == 2
    # the full weights were gathered from the shards: gpt_core loads them on its own
    model = load_pretrained(out / "checkpoints" / "best")
    assert model.num_params() == get_preset("tiny").num_params()
