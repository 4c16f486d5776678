import ast
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gpt_core import GPT, IGNORE_INDEX, KVCache, get_preset
from gpt_core.config import ConfigError
from gpt_core.model import make_norm, rotary_tables, rotate, sinusoidal_positions

GPT_CORE = Path(__file__).resolve().parents[2] / "gpt_core"


def test_gpt_core_imports_no_training_framework():
    forbidden = {"accelerate", "wandb", "deepspeed", "transformers"}
    offenders = []
    for path in GPT_CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert not offenders


def test_paper_model_parameters_and_tied_head():
    model = GPT(get_preset("paper"))
    assert model.num_params() == get_preset("paper").num_params()
    assert round(model.num_params() / 1e6, 1) == 44.6
    assert model.head.weight is model.embed.weight
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()


def test_init_is_normal_002():
    model = GPT(get_preset("paper"))
    w = model.blocks[0].ffn.up.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.all(model.blocks[0].ffn.up.bias == 0)


def test_positions_are_sinusoidal_and_not_parameters():
    pe = sinusoidal_positions(256, 512)
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    assert math.isclose(pe[5, 2].item(), math.sin(5 / 10000 ** (2 / 512)), rel_tol=1e-5)
    model = GPT(get_preset("tiny"))
    assert "positions" not in dict(model.named_parameters())
    assert "positions" not in model.state_dict()


def textbook_attention(q, k, v):
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def test_attention_equals_the_textbook_formula():
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    attn = model.blocks[0].attn
    x = torch.randn(3, 10, model.config.d_model)
    B, T, C = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.n_head, attn.head_dim).permute(2, 0, 3, 1, 4)
    expected = attn.proj(textbook_attention(q, k, v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    idx = torch.randint(0, 50257, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50257
    torch.testing.assert_close(model(idx)[0][:, :8], model(changed)[0][:, :8])


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_loss_is_mean_cross_entropy_over_non_ignored_targets(norm):
    torch.manual_seed(0)
    model = GPT(get_preset("tiny").replace(norm=norm)).eval()
    idx = torch.randint(0, 50257, (2, 16))
    targets = torch.randint(0, 50257, (2, 16))
    targets[1, 10:] = IGNORE_INDEX
    no_logits, loss = model(idx, targets)  # training never needs the logits: the fused head skips them
    logits, no_loss = model(idx)
    assert no_logits is None and no_loss is None and logits.shape == (2, 16, 50257)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)
    assert math.isclose(loss.item(), math.log(50257), rel_tol=0.1)  # untrained: near uniform


def test_pre_and_post_norm_differ_in_structure():
    assert isinstance(GPT(get_preset("tiny").replace(norm="pre")).final_norm, torch.nn.LayerNorm)
    assert isinstance(GPT(get_preset("tiny").replace(norm="post")).final_norm, torch.nn.Identity)


def test_cached_forward_matches_full_forward_for_chunks():
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    idx = torch.randint(0, 50257, (2, 20))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    pieces = [model(idx[:, a:b], cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 15), (15, 20)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)


def test_one_row_decode_path_equals_linear_and_follows_weight_updates():
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    row = torch.randn(1, 1, model.config.d_model)
    widening = [model.blocks[0].attn.qkv, model.blocks[0].ffn.up, model.head]
    narrowing = [model.blocks[0].attn.proj, model.blocks[0].ffn.down]
    with torch.no_grad():
        for layer in widening + narrowing:
            x = torch.randn(1, 1, layer.in_features)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
            # The transposed copy is used, and kept, only where a layer widens.
            assert (layer._decode_weight is not None) == (layer in widening)
        before = model.head(row)
        model.embed.weight.mul_(2.0)  # the tied head's weight changes in place, as in an optimizer step
        torch.testing.assert_close(model.head(row), 2.0 * before)
    # With autograd on, the plain path runs and gradients flow to the weight.
    model.head(row).sum().backward()
    assert model.embed.weight.grad is not None


def test_too_long_input_is_refused():
    model = GPT(get_preset("tiny"))
    with pytest.raises(ValueError, match="exceeds the context length 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("chunk_rows", [5, 2048])
def test_fused_head_gradients_equal_the_plain_cross_entropy(chunk_rows):
    torch.manual_seed(0)
    model = GPT(get_preset("tiny").replace(dropout=0.0))
    model.head.chunk_rows = chunk_rows
    idx, targets = torch.randint(0, 50257, (3, 12)), torch.randint(0, 50257, (3, 12))
    targets[2, 4:] = IGNORE_INDEX
    _, fused = model(idx, targets)
    (fused * 3).backward()  # a non-unit upstream gradient, as with accumulation or loss scaling
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits, _ = model(idx)
    plain = F.cross_entropy(logits.view(-1, 50257), targets.view(-1), ignore_index=IGNORE_INDEX)
    (plain * 3).backward()
    torch.testing.assert_close(fused, plain)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_fused_head_under_bf16_autocast_equals_autocasts_plain_path():
    """What a bf16 run trains on: the fused head agrees with autocast's own linear + fp32
    cross-entropy to bf16's rounding, and its loss comes back in fp32."""
    torch.manual_seed(0)
    model = GPT(get_preset("tiny").replace(dropout=0.0))
    idx, targets = torch.randint(0, 50257, (3, 12)), torch.randint(0, 50257, (3, 12))
    targets[2, 4:] = IGNORE_INDEX
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, fused = model(idx, targets)
    fused.backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(idx)
    plain = F.cross_entropy(logits.view(-1, 50257).float(), targets.view(-1), ignore_index=IGNORE_INDEX)
    plain.backward()
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=1e-3)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], p.grad, atol=1e-4, rtol=3e-2, msg=name)


@pytest.mark.parametrize("measure_columns", [1000, 8192, 60000])
def test_measured_rows_equal_the_full_logits(measure_columns):
    """The chunked evaluation head gives what the (B x T x vocab) logits give, row by row."""
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    model.head.measure_columns = measure_columns
    idx, targets = torch.randint(0, 50257, (4, 16)), torch.randint(0, 50257, (4, 16))
    with torch.no_grad():
        logits, _ = model(idx)
    targets[3, 5:] = IGNORE_INDEX  # a padded row
    targets[0, :9] = logits[0, :9].argmax(-1)  # tokens the model predicts: accuracy is not just 0
    targets[1, :3] = torch.tensor([0, 50256, 8191])  # the vocabulary's ends and a slice boundary
    with torch.no_grad():
        _, rows = model(idx, targets, measure=True)
    mask = targets != IGNORE_INDEX
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    correct = (logits.argmax(dim=-1) == targets) & mask
    expected = torch.stack([token_loss.sum(1), correct.sum(1).float(), mask.sum(1).float()], dim=1).double()
    assert rows.shape == (4, 3) and rows.dtype == torch.float64
    torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-4)
    assert rows[3, 2] == 5 and rows[0, 1] >= 9 and rows[:, 1].sum() == correct.sum()


def test_attention_dropout_is_separate_and_off_by_default():
    assert get_preset("paper").attention_dropout == 0.0 and get_preset("paper").dropout == 0.1
    model = GPT(get_preset("tiny").replace(attention_dropout=0.2))
    assert model.blocks[0].attn.attn_dropout == 0.2


# ---- today's small-LM block: each field against an independent reference ----------------------------
def test_rope_turns_each_pair_of_halves_by_position_times_its_frequency():
    """RoPE as the complex formula: the pair (x_i, x_{i + hd/2}) is z_i, multiplied by e^(i p theta_i)
    with theta_i = base^(-2i/hd); the two halves pairing is transformers' Llama's."""
    torch.manual_seed(0)
    head_dim, length, base = 8, 11, 500.0
    x = torch.randn(2, 3, length, head_dim, dtype=torch.float64)
    cos, sin = rotary_tables(length, head_dim, base)
    turned = rotate(x, cos.double(), sin.double())
    half = head_dim // 2
    theta = torch.tensor([base ** (-2 * i / head_dim) for i in range(half)], dtype=torch.float64)
    angle = torch.arange(length, dtype=torch.float64).unsqueeze(1) * theta
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angle), angle)
    expected = torch.cat([z.real, z.imag], dim=-1)
    torch.testing.assert_close(turned, expected, atol=1e-5, rtol=1e-5)
    # Relative positions only: the score of q at p and k at p' depends on p - p' alone.
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)
    qs, ks = rotate(q.expand(1, 1, length, -1), cos, sin)[0, 0], rotate(k.expand(1, 1, length, -1), cos, sin)[0, 0]
    torch.testing.assert_close(qs[7] @ ks[4], qs[5] @ ks[2], atol=1e-5, rtol=1e-5)


def test_rmsnorm_is_its_definition():
    config = get_preset("tiny").replace(normalization="rmsnorm", norm_eps=1e-6)
    norm = make_norm(config, 32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 7, 32) * 3 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert sum(p.numel() for p in norm.parameters()) == 32  # a gain, no bias


def test_grouped_query_attention_equals_repeated_key_value_heads():
    """n_kv_head = 1 with 4 query heads is multi-head attention whose k, v heads are one head, repeated."""
    torch.manual_seed(0)
    config = get_preset("tiny").replace(n_head=4, n_kv_head=1)
    attn = GPT(config).eval().blocks[0].attn
    x = torch.randn(2, 9, config.d_model)
    B, T, C = x.shape
    q, k, v = attn.qkv(x).split(attn.split, dim=-1)
    assert k.shape[-1] == C // 4  # one head's width
    q = q.view(B, T, 4, -1).transpose(1, 2)
    k, v = (t.view(B, T, 1, -1).transpose(1, 2).repeat_interleave(4, dim=1) for t in (k, v))
    expected = attn.proj(textbook_attention(q, k, v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


FIELD_CHOICES = {
    "positions": ["sinusoidal", "learned", "rope"],
    "normalization": ["layernorm", "rmsnorm"],
    "activation": ["gelu", "swiglu", "relu2"],
    "n_kv_head": [None, 1],
    "qk_norm": [False, True],
    "tie_embeddings": [True, False],
    "bias": [True, False],
    "norm": ["pre", "post"],
}


def every_combination():
    names = list(FIELD_CHOICES)
    for values in itertools.product(*FIELD_CHOICES.values()):
        yield get_preset("tiny").replace(n_head=4, vocab_size=300, **dict(zip(names, values, strict=True)))


def test_every_combination_counts_its_parameters_caches_and_fuses_its_head_exactly():
    """For all 576 combinations of the fields: the config's parameter count is the model's; the KV
    cache gives what recomputing the whole prefix gives; the fused training head and the chunked
    evaluation head give the plain cross-entropy over the logits."""
    torch.manual_seed(0)
    idx, targets = torch.randint(0, 300, (2, 12)), torch.randint(0, 300, (2, 12))
    for config in every_combination():
        model = GPT(config).eval()
        assert model.num_params() == config.num_params(), config
        assert (model.head.weight is model.embed.weight) == config.tie_embeddings
        with torch.no_grad():
            full, _ = model(idx)
            cache = KVCache(config, 2, "cpu", torch.float32)
            pieces = [model(idx[:, a:b], cache=cache)[0] for a, b in [(0, 5), (5, 6), (6, 12)]]
            torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4, msg=str(config))
            _, rows = model(idx, targets, measure=True)
        plain = F.cross_entropy(full.view(-1, 300), targets.view(-1))
        _, fused = model(idx, targets)
        torch.testing.assert_close(fused, plain, msg=str(config))
        torch.testing.assert_close((rows[:, 0].sum() / rows[:, 2].sum()).float(), plain, msg=str(config))


def test_invalid_field_values_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"n_kv_head must divide n_head \(4\), got 3"):
        get_preset("tiny").replace(n_head=4, n_kv_head=3)
    with pytest.raises(ConfigError, match="positions must be one of sinusoidal, learned, rope, got 'alibi'"):
        get_preset("tiny").replace(positions="alibi")
    with pytest.raises(ConfigError, match="normalization must be one of layernorm, rmsnorm"):
        get_preset("tiny").replace(normalization="batchnorm")
