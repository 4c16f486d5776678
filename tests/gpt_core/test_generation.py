import pytest
import torch

from gpt_core import GPT, GenerationError, generate, get_preset, get_tokenizer
from gpt_core.generation import filter_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(get_preset("tiny")).eval()


def test_greedy_with_cache_equals_recomputing_the_prefix(model):
    prompt = get_tokenizer().encode("Once upon a time")
    cached = generate(model, prompt, 25, greedy=True, eos_id=None)
    recomputed = generate(model, prompt, 25, greedy=True, eos_id=None, use_cache=False)
    assert len(cached) == 25 and cached == recomputed


def test_paper_model_generates_from_a_prompt():
    torch.manual_seed(0)
    paper = GPT(get_preset("paper")).eval()
    tok = get_tokenizer()
    out = generate(paper, tok.encode("The little girl"), 12, seed=1, eos_id=None)
    assert len(out) == 12 and all(0 <= t < 50257 for t in out)
    assert isinstance(tok.decode(out), str)


def test_output_may_outgrow_the_context(model):
    context = model.config.context_length
    out = generate(model, [1, 2, 3], 3 * context, eos_id=None, seed=0)
    assert len(out) == 3 * context
    # within the first context both paths agree exactly; beyond it the windowed cache is used
    greedy = generate(model, [1, 2, 3], context - 3, greedy=True, eos_id=None)
    assert greedy == generate(model, [1, 2, 3], context - 3, greedy=True, eos_id=None, use_cache=False)


def test_seed_makes_sampling_repeatable(model):
    a = generate(model, [10, 20], 20, seed=7, eos_id=None)
    b = generate(model, [10, 20], 20, seed=7, eos_id=None)
    c = generate(model, [10, 20], 20, seed=8, eos_id=None)
    assert a == b and a != c


def test_stops_at_end_of_text():
    model = GPT(get_preset("tiny")).eval()
    with torch.no_grad():  # every hidden state becomes the <|endoftext|> row: its logit is the largest
        model.final_norm.weight.zero_()
        model.final_norm.bias.copy_(model.embed.weight[50256])
    out = generate(model, [10, 20], 50, greedy=True)
    assert out == [50256]


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    assert torch.isfinite(filter_logits(logits, 2, None)).tolist() == [True, True, False, False, False]
    probs = logits.softmax(-1)  # ~[0.64, 0.24, 0.09, 0.03, 0.01]
    kept = torch.isfinite(filter_logits(logits, None, 0.8)).tolist()
    assert kept == [True, True, False, False, False] and probs[0] < 0.8 < probs[:2].sum()
    assert torch.isfinite(filter_logits(logits, None, 0.5)).sum() == 1  # the top token always stays
    assert torch.isfinite(filter_logits(logits, None, 1.0)).all()


def test_sampling_respects_top_k(model):
    torch.manual_seed(0)
    logits, _ = model(torch.tensor([[5, 6, 7]]))
    allowed = set(torch.topk(logits[0, -1], 3).indices.tolist())
    seen = {generate(model, [5, 6, 7], 1, top_k=3, top_p=None, seed=s)[0] for s in range(30)}
    assert seen <= allowed and len(seen) > 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": 0}, "top_k must be >= 1"),
    ],
)
def test_invalid_arguments(model, kwargs, words):
    with pytest.raises(GenerationError, match=words):
        generate(model, [1, 2], 5, **kwargs)


def test_empty_and_too_long_prompts(model):
    with pytest.raises(GenerationError, match="prompt is empty"):
        generate(model, [], 5)
    with pytest.raises(GenerationError, match="prompt has 40 tokens but the model's context is 32"):
        generate(model, list(range(40)), 5)
