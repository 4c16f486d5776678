"""gpt_core/hf.py: our models in transformers' format, checked against transformers itself
(a test dependency; gpt_core never imports it)."""

import json

import pytest
import torch

from gpt_core import GPT, get_preset, load_pretrained, save_hf
from gpt_core.hf import config_from_hf

transformers = pytest.importorskip("transformers")

# OpenAI GPT's GELU is the tanh approximation: a post-LN model exports exactly with the same one
POST_LN = get_preset("paper").replace(
    n_layer=2, n_head=4, d_model=64, d_ff=256, context_length=48, activation="gelu_tanh"
)
PRE_LN = get_preset("small").replace(n_layer=2, context_length=48)


def trained_like(config):
    """Weights with the spread of a trained model's, not N(0, 0.02): differences must show."""
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("config, architecture", [(POST_LN, "OpenAIGPTLMHeadModel"), (PRE_LN, "GPT2LMHeadModel")])
def test_transformers_computes_our_logits_from_the_export(tmp_path, config, architecture):
    ours = trained_like(config)
    save_hf(ours, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == architecture
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    with torch.no_grad():
        assert (ours(idx)[0] - theirs(idx).logits).abs().max() <= 1e-4
        back = load_pretrained(tmp_path).eval()  # gpt_core reads transformers' names itself
        assert (ours(idx)[0] - back(idx)[0]).abs().max() <= 1e-5


def test_an_erf_gelu_post_ln_model_exports_with_its_one_difference_said(tmp_path):
    ours = trained_like(POST_LN.replace(activation="gelu"))  # the paper's own GELU
    notes = save_hf(ours, tmp_path)
    assert len(notes) == 1 and "tanh approximation" in notes[0] and "gelu_tanh" in notes[0]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, POST_LN.vocab_size, (2, POST_LN.context_length))
    with torch.no_grad():
        assert 1e-5 < (ours(idx)[0] - theirs(idx).logits).abs().max() <= 5e-3
    assert save_hf(trained_like(PRE_LN), tmp_path / "pre") == []  # GPT-2 takes erf GELU as it is


def test_the_export_is_a_fixed_point_of_loading_and_exporting_again(tmp_path):
    save_hf(trained_like(PRE_LN), tmp_path / "a")
    save_hf(load_pretrained(tmp_path / "a"), tmp_path / "b")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_export_stores_the_tied_matrix_once(tmp_path):
    from gpt_core import save_pretrained

    model = trained_like(PRE_LN)
    save_pretrained(model, tmp_path / "ours")
    save_hf(model, tmp_path / "hf")
    size = lambda d: (d / "model.safetensors").stat().st_size
    # the learned-looking position table is the one addition: context x d_model floats
    assert size(tmp_path / "hf") <= size(tmp_path / "ours") + PRE_LN.context_length * PRE_LN.d_model * 4 + 4096


def test_the_gpt2_preset_computes_what_gpt2_does(tmp_path):
    """OpenAI's GPT-2 small shape; its forward equals GPT2LMHeadModel's (random weights, saved and
    read back as a user's local copy of `gpt2` would be)."""
    assert config_from_hf(transformers.GPT2Config().to_dict()) == get_preset("gpt2")
    small = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=50257)
    torch.manual_seed(0)
    reference = transformers.GPT2LMHeadModel(small).eval()
    reference.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).eval()
    assert ours.config == get_preset("gpt2").replace(n_layer=2, d_model=64, n_head=4, d_ff=256, context_length=64)
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        assert (ours(idx)[0] - reference(idx).logits).abs().max() <= 1e-4
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt2"


def test_a_post_ln_shape_openai_gpt_cannot_compute_is_refused_in_words(tmp_path):
    with pytest.raises(ValueError, match=r"feed-forward is 4 x d_model \(256\), this model's is 128"):
        save_hf(GPT(POST_LN.replace(d_ff=128)), tmp_path)


# ---- Llama-style models: LlamaForCausalLM, and Qwen3ForCausalLM for qk_norm -----------------------------
LLAMA = get_preset("llama-small").replace(n_layer=2, context_length=48, vocab_size=500)


@pytest.mark.parametrize(
    "config, architecture",
    [
        (LLAMA, "LlamaForCausalLM"),  # grouped-query attention, tied
        (LLAMA.replace(n_kv_head=None, tie_embeddings=False, embed_scale=True), "LlamaForCausalLM"),
        (LLAMA.replace(qk_norm=True), "Qwen3ForCausalLM"),
    ],
)
def test_transformers_llama_and_qwen3_compute_our_logits_from_the_export(tmp_path, config, architecture):
    ours = trained_like(config)
    assert save_hf(ours, tmp_path) == []
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == architecture
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    with torch.no_grad():
        assert (ours(idx)[0] - theirs(idx).logits).abs().max() <= 1e-4
        back = load_pretrained(tmp_path).eval()
        assert (ours(idx)[0] - back(idx)[0]).abs().max() <= 1e-5
    save_hf(back, tmp_path / "again")  # a fixed point: exported, read, exported again
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_a_llama_folder_from_save_pretrained_loads_as_gpt_core_computing_its_logits(tmp_path):
    """What a user downloads from the Hub (llama2.c's stories models are such folders)."""
    shape = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=500.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(shape).eval()
    reference.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).eval()
    assert (ours.config.n_kv_head, ours.config.rope_base, ours.config.tie_embeddings) == (2, 500.0, False)
    idx = torch.randint(0, 512, (2, 64))
    with torch.no_grad():
        assert (ours(idx)[0] - reference(idx).logits).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "config, message",
    [
        (LLAMA.replace(normalization="layernorm"), "exports as Llama, and this one has normalization 'layernorm'"),
        (LLAMA.replace(activation="relu2"), "activation 'relu2' (not 'swiglu')"),
        (get_preset("small").replace(activation="swiglu"), "GPT-2 and OpenAI GPT compute the paper's block"),
        (get_preset("small").replace(n_kv_head=2), "n_kv_head 2 (not None)"),
    ],
)
def test_a_model_no_stock_class_computes_is_refused_naming_the_fields(tmp_path, config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        save_hf(GPT(config), tmp_path)
    assert not (tmp_path / "config.json").exists()
