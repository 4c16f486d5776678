"""What only a CUDA GPU can run, kept small: everything else in tests/gpu runs on the CPU too.

- `--batch-size auto` measures free GPU memory (refused in one line on a CPU: test_config.py);
- pinned host memory for the loaders (pinning needs a CUDA driver);
- fp16 through Accelerate's own loss scaler is test_training.py's skipped-update test, CUDA half;
- NCCL needs two GPUs: not run on a one-GPU machine (DDP is checked over gloo in tests/launch)."""

import json

import pytest
import torch

from launch.data.batching import make_loaders
from launch.data.prepare import prepare_data
from launch.settings.config import SMOKE_DATA, DataConfig
from tests.helpers import tiny_run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_batch_size_auto_fills_the_gpu_and_keeps_the_rows_per_step(tmp_path):
    out = tmp_path / "run"
    proc = tiny_run(out, "--batch-size", "auto", "--grad-accum", "8", "--max-steps", "3", "--log-every", "1")
    assert "batch: auto chose" in proc.stdout
    saved = json.loads((out / "train_config.json").read_text())
    batch, accumulation = saved["batch_size"], saved["grad_accum"]  # what the run resumes with
    assert isinstance(batch, int) and batch * accumulation >= 4 * 8 > batch * (accumulation - 1)


def test_loaders_hand_the_gpu_pinned_batches(tmp_path):
    data = prepare_data(DataConfig(source=str(SMOKE_DATA), cache_dir=str(tmp_path)), log=lambda *_: None)
    loaders = make_loaders(data.splits, 32, "packed", 2, 0, pin_memory=True, log=print)
    x, y = next(iter(loaders["train"]))
    assert x.is_pinned() and y.is_pinned()
