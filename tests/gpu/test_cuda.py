"""GPU paths, run on a CUDA machine (`pytest -m gpu`); skipped where there is no CUDA, as in CI.

Tolerances: fp32 results match the unfused reference to 1e-5 relative; bf16/fp16 autocast to 2e-2
(their 8/11-bit mantissas round every product, so results differ from fp32 by ~1e-3 relative)."""

import json

import pytest
import torch
import torch.nn.functional as F

from gpt_core import GPT, generate, get_preset
from tests.helpers import deepspeed_run, records, run_cli, tiny_run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_head_equals_the_unfused_loss_and_gradients_under_autocast(dtype):
    torch.manual_seed(0)
    model = GPT(get_preset("small")).cuda()
    x = torch.randint(0, 50257, (4, 128), device="cuda")
    y = torch.randint(0, 50257, (4, 128), device="cuda")
    y[0, :40] = -100  # padding is ignored by both
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        _, fused = model(x, y)
    fused.backward()
    fused_grads = [p.grad.float().clone() for p in model.parameters()]
    model.zero_grad()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        logits, _ = model(x)
    plain = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
    plain.backward()
    tol = TOLERANCE[dtype]
    assert fused.item() == pytest.approx(plain.item(), rel=tol)
    for got, p in zip(fused_grads, model.parameters(), strict=True):
        assert torch.allclose(got, p.grad.float(), rtol=tol, atol=tol * p.grad.abs().max().item())


def test_kv_cached_generation_equals_recomputation_on_cuda():
    torch.manual_seed(0)
    model = GPT(get_preset("small")).cuda().eval()
    prompt = [464, 1310, 2576]
    cached = generate(model, prompt, 200, greedy=True, eos_id=None)  # past the context: re-encodes too
    assert cached == generate(model, prompt, 200, greedy=True, eos_id=None, use_cache=False)


def test_fp16_run_counts_only_real_updates(tmp_path):
    """Early fp16 steps overflow and the scaler skips them: the step counter, schedule and token
    counts must count only updates that happened."""
    out = tmp_path / "run"
    tiny_run(out, "--mixed-precision", "fp16", "--max-steps", "8", "--log-every", "1", "--lr", "1e-2")
    train = records(out, "train")
    assert [r["step"] for r in train] == list(range(1, 9))
    tokens_per_step = 2 * 2 * 32  # batch 2 x accumulation 2 x context 32, one process
    assert [r["tokens"] for r in train] == [tokens_per_step * s for s in range(1, 9)]


def test_resume_on_cuda_continues_with_the_same_losses(tmp_path):
    common = ["--preset", "small", "--max-steps", "10", "--log-every", "1", "--eval-every", "5"]
    tiny_run(tmp_path / "straight", *common)
    tiny_run(tmp_path / "resumed", *common, "--stop-after-steps", "4")
    tiny_run(tmp_path / "resumed", *common, "--resume", "auto")
    a = [r["loss"] for r in records(tmp_path / "straight", "train")]
    b = [r["loss"] for r in records(tmp_path / "resumed", "train")]
    assert len(a) == len(b) == 10
    assert b == pytest.approx(a, rel=1e-4)  # cuBLAS may pick other kernels after a restart


def test_compile_trains_close_to_eager(tmp_path):
    common = ["--preset", "small", "--max-steps", "6", "--log-every", "1", "--dropout", "0"]
    tiny_run(tmp_path / "eager", *common)
    tiny_run(tmp_path / "compiled", *common, "--compile")
    a = [r["loss"] for r in records(tmp_path / "eager", "train")]
    b = [r["loss"] for r in records(tmp_path / "compiled", "train")]
    assert b == pytest.approx(a, rel=1e-3)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_one_gpu_pauses_and_resumes(tmp_path, stage):
    pytest.importorskip("deepspeed")
    out = tmp_path / "run"
    config = f"launch/deepspeed_zero{stage}.yaml"
    args = deepspeed_run(config, out, "--log-every", "1", processes=1, precision="bf16")
    run_cli(args + ["--stop-after-steps", "2"])
    run_cli(args + ["--resume", "auto"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["hardware"]["mixed_precision"] == "bf16"


def test_batch_size_auto_fills_the_gpu_and_keeps_the_rows_per_step(tmp_path):
    out = tmp_path / "run"
    proc = tiny_run(out, "--batch-size", "auto", "--grad-accum", "8", "--max-steps", "3", "--log-every", "1")
    assert "batch: auto chose" in proc.stdout
    saved = json.loads((out / "train_config.json").read_text())
    batch, accumulation = saved["batch_size"], saved["grad_accum"]  # what the run resumes with
    assert isinstance(batch, int) and batch * accumulation >= 4 * 8 > batch * (accumulation - 1)
