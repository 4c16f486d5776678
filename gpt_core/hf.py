"""transformers' format for our models, read and written by hand (this package never imports
transformers). Two stock classes compute exactly our blocks, so no custom code is needed to load an
export: OpenAI GPT (`OpenAIGPTLMHeadModel`: LayerNorm after each residual add, our post-LN) and
GPT-2 (`GPT2LMHeadModel`: LayerNorm before each sub-layer and a final one, our pre-LN).

Both learn a position table, scale no embedding, and keep one tied embedding/output matrix:
  - the position table holds our sinusoids (or our learned table);
  - the embedding is stored times sqrt(d_model) (what our forward multiplies it by), so the input
    is computed bit for bit as ours; the same matrix is the output layer, so the LayerNorm before
    it (GPT-2's ln_f, the last block's ln_2 in OpenAI GPT) is divided by sqrt(d_model) in return.
  - their Conv1D weights are our Linear weights transposed.
OpenAI GPT's only GELU is the tanh approximation: a post-LN model trained with `activation="gelu"`
(erf) exports with that one difference, which `to_hf` reports. Reading a folder back gives the model
in transformers' parameterisation (learned positions, no embedding scale), exactly as stored.
"""

from __future__ import annotations

import math

import torch

from .config import GPTConfig

ARCHITECTURES = {"post": ("openai-gpt", "OpenAIGPTLMHeadModel"), "pre": ("gpt2", "GPT2LMHeadModel")}
# name stems (ours -> theirs) inside block i, and whether the tensor is a Conv1D weight (transposed)
BLOCK_NAMES = [
    ("attn.qkv", "attn.c_attn"),
    ("attn.proj", "attn.c_proj"),
    ("ffn.up", "mlp.c_fc"),
    ("ffn.down", "mlp.c_proj"),
    ("norm1", "ln_1"),
    ("norm2", "ln_2"),
]


def is_hf_config(data: dict) -> bool:
    return data.get("model_type") in {kind for kind, _ in ARCHITECTURES.values()}


def hf_config(config: GPTConfig) -> dict:
    kind, architecture = ARCHITECTURES[config.norm]
    shared = {
        "model_type": kind,
        "architectures": [architecture],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
    }
    if kind == "gpt2":
        activation = "gelu_new" if config.activation == "gelu_tanh" else "gelu"
        return {**shared, "n_inner": config.d_ff, "activation_function": activation}
    if config.d_ff != 4 * config.d_model:
        raise ValueError(
            f"OpenAI GPT's feed-forward is 4 x d_model ({4 * config.d_model}), this model's is "
            f"{config.d_ff}: a post-LN model exports only with d_ff = 4 x d_model"
        )
    return {**shared, "afn": "gelu"}  # OpenAI GPT's "gelu" is the tanh approximation


def approximations(config: GPTConfig) -> list[str]:
    """What transformers' class for `config` computes differently from gpt_core (empty: nothing)."""
    if config.norm == "post" and config.activation == "gelu":
        return [
            "OpenAI GPT's only GELU is the tanh approximation and this model was trained with erf GELU: "
            "transformers' logits differ from gpt_core's by about 1e-3 (train with activation gelu_tanh, "
            "in a --model-config, for an exact export)"
        ]
    return []


def config_from_hf(data: dict) -> GPTConfig:
    gpt2 = data["model_type"] == "gpt2"
    tanh = data.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh") if gpt2 else True
    d_model = data["n_embd"]
    return GPTConfig(
        vocab_size=data["vocab_size"],
        context_length=data["n_positions"],
        n_layer=data["n_layer"],
        n_head=data["n_head"],
        d_model=d_model,
        d_ff=(data.get("n_inner") or 4 * d_model) if gpt2 else 4 * d_model,
        dropout=data.get("resid_pdrop", 0.1),
        attention_dropout=data.get("attn_pdrop", 0.1),
        norm="pre" if gpt2 else "post",
        init_std=data.get("initializer_range", 0.02),
        positions="learned",
        embed_scale=False,
        activation="gelu_tanh" if tanh else "gelu",
    )


def _prefix(config: GPTConfig) -> dict[str, str]:
    if config.norm == "pre":
        return {"embed": "transformer.wte.weight", "positions": "transformer.wpe.weight", "blocks": "transformer.h"}
    return {
        "embed": "transformer.tokens_embed.weight",
        "positions": "transformer.positions_embed.weight",
        "blocks": "transformer.h",
    }


def to_hf(state: dict[str, torch.Tensor], config: GPTConfig, positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' tensors for our `state` (a GPT's state_dict); `positions` is its position table."""
    names, scale = _prefix(config), math.sqrt(config.d_model) if config.embed_scale else 1.0
    out = {names["embed"]: state["embed.weight"] * scale, names["positions"]: positions.detach().clone()}
    for i in range(config.n_layer):
        for ours, theirs in BLOCK_NAMES:
            weight, bias = state[f"blocks.{i}.{ours}.weight"], state[f"blocks.{i}.{ours}.bias"]
            out[f"{names['blocks']}.{i}.{theirs}.weight"] = weight if ours.startswith("norm") else weight.t()
            out[f"{names['blocks']}.{i}.{theirs}.bias"] = bias
    last = "transformer.ln_f" if config.norm == "pre" else f"{names['blocks']}.{config.n_layer - 1}.ln_2"
    source = "final_norm" if config.norm == "pre" else f"blocks.{config.n_layer - 1}.norm2"
    for kind in ("weight", "bias"):  # the output layer is the scaled embedding: scale its input back
        out[f"{last}.{kind}"] = state[f"{source}.{kind}"] / scale
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def from_hf(tensors: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state_dict (for `config_from_hf`'s model) from transformers' tensors, exactly as stored."""
    names = _prefix(config)
    state = {"embed.weight": tensors[names["embed"]], "pos_embed.weight": tensors[names["positions"]]}
    for i in range(config.n_layer):
        for ours, theirs in BLOCK_NAMES:
            weight = tensors[f"{names['blocks']}.{i}.{theirs}.weight"]
            state[f"blocks.{i}.{ours}.weight"] = weight if ours.startswith("norm") else weight.t().contiguous()
            state[f"blocks.{i}.{ours}.bias"] = tensors[f"{names['blocks']}.{i}.{theirs}.bias"]
    if config.norm == "pre":
        state["final_norm.weight"], state["final_norm.bias"] = (
            tensors["transformer.ln_f.weight"],
            tensors["transformer.ln_f.bias"],
        )
    state["head.weight"] = state["embed.weight"]
    return state
