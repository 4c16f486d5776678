"""gpt_core's fast paths under each precision, on each device: the fused training head, the chunked
evaluation head and KV-cached generation against the plain computation they replace.

Tolerances: fp32 results match the plain reference to 1e-5 relative; bf16/fp16 autocast to 2e-2
(8/11-bit mantissas round every product, so results differ from fp32 by ~1e-3 relative)."""

import pytest
import torch
import torch.nn.functional as F

from gpt_core import GPT, generate, get_preset
from gpt_core.model import KVCache

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def model_and_batch(device, train: bool):
    """The small preset with a 4,096-token vocabulary (fp16 products on a CPU are slow), its heads cut
    into several chunks of rows (training) and slices of the vocabulary (evaluation), as a full-size
    model's are."""
    torch.manual_seed(0)
    model = GPT(get_preset("small").replace(vocab_size=4096)).to(device).train(train)
    model.head.chunk_rows, model.head.measure_columns = 48, 1000
    x = torch.randint(0, 4096, (2, 64), device=device)
    y = torch.randint(0, 4096, (2, 64), device=device)
    y[0, :20] = -100  # padding is ignored by both
    return model, x, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_head_equals_the_unfused_loss_and_gradients_under_autocast(device, dtype):
    model, x, y = model_and_batch(device, train=True)  # dropout on: both passes draw the same masks
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), autocast(device, dtype):
        torch.manual_seed(1)
        _, fused = model(x, y)
    fused.backward()
    fused_grads = [p.grad.float().clone() for p in model.parameters()]
    model.zero_grad()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), autocast(device, dtype):
        torch.manual_seed(1)
        logits, _ = model(x)
    plain = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
    plain.backward()
    tol = TOLERANCE[dtype]
    assert fused.item() == pytest.approx(plain.item(), rel=tol)
    for got, p in zip(fused_grads, model.parameters(), strict=True):
        assert torch.allclose(got, p.grad.float(), rtol=tol, atol=tol * p.grad.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_evaluation_head_equals_the_full_logits_under_autocast(device, dtype):
    model, x, y = model_and_batch(device, train=False)
    with torch.no_grad(), autocast(device, dtype):
        _, rows = model(x, y, measure=True)
        logits, _ = model(x)
    logits = logits.float()
    real = y != -100
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="none").view_as(y)
    correct = (logits.argmax(-1) == y) & real
    tol = TOLERANCE[dtype]
    assert rows[:, 0].tolist() == pytest.approx(losses.sum(1).double().tolist(), rel=tol)
    assert rows[:, 2].tolist() == real.sum(1).double().tolist()
    # in low precision a near-tie may go either way: at most 2 % of tokens
    assert (rows[:, 1] - correct.sum(1)).abs().sum().item() <= tol * real.sum().item() + 1e-9


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cached_decoding_equals_recomputation_under_autocast(device, dtype):
    """Token by token through the KV cache, each position's logits are those of the whole prefix."""
    model, x, _ = model_and_batch(device, train=False)
    prompt = x[:1, :8]
    with torch.no_grad(), autocast(device, dtype):
        full, _ = model(x[:1, :40])
        cache = KVCache(model.config, 1, device, next(model.parameters()).dtype)
        steps = [model(prompt, cache=cache, last_only=True)[0]]
        steps += [model(x[:1, t : t + 1], cache=cache)[0] for t in range(8, 39)]
    cached = torch.cat(steps, dim=1).float()
    reference = full[:, 7:39].float()
    tol = TOLERANCE[dtype]
    assert torch.allclose(cached, reference, rtol=tol, atol=tol * reference.abs().max().item())


def test_greedy_generation_with_the_cache_equals_recomputation(device):
    torch.manual_seed(0)
    model = GPT(get_preset("small")).to(device).eval()
    prompt = [464, 1310, 2576]
    cached = generate(model, prompt, 200, greedy=True, eos_id=None)  # past the context: re-encodes too
    assert cached == generate(model, prompt, 200, greedy=True, eos_id=None, use_cache=False)
