"""transformers' format for our models, read and written by hand (this package never imports
transformers). Stock classes compute exactly our blocks, so no custom code is needed to load an
export: OpenAI GPT (`OpenAIGPTLMHeadModel`: LayerNorm after each residual add, our post-LN) and
GPT-2 (`GPT2LMHeadModel`: LayerNorm before each sub-layer and a final one, our pre-LN) for the
paper's block; Llama (`LlamaForCausalLM`) for a rotary, RMSNorm, SwiGLU, bias-free block, and Qwen3
(`Qwen3ForCausalLM`), which is Llama with RMSNorm of queries and keys, for the same with qk_norm.

Both learn a position table, scale no embedding, and keep one tied embedding/output matrix:
  - the position table holds our sinusoids (or our learned table);
  - the embedding is stored times sqrt(d_model) (what our forward multiplies it by), so the input
    is computed bit for bit as ours; the same matrix is the output layer, so the LayerNorm before
    it (GPT-2's ln_f, the last block's ln_2 in OpenAI GPT) is divided by sqrt(d_model) in return.
  - their Conv1D weights are our Linear weights transposed.
OpenAI GPT's only GELU is the tanh approximation: a post-LN model trained with `activation="gelu"`
(erf) exports with that one difference, which `to_hf` reports. Reading a folder back gives the model
in transformers' parameterisation (learned positions, no embedding scale), exactly as stored.

Llama and Qwen3 keep q, k, v, gate and up as separate matrices (ours are fused: split on the way
out, joined on the way in) and pair a head's rotary features as its two halves, as we do.
"""

from __future__ import annotations

import math

import torch

from .config import GPTConfig

ARCHITECTURES = {"post": ("openai-gpt", "OpenAIGPTLMHeadModel"), "pre": ("gpt2", "GPT2LMHeadModel")}
LLAMA_ARCHITECTURES = {False: ("llama", "LlamaForCausalLM"), True: ("qwen3", "Qwen3ForCausalLM")}  # by qk_norm
READABLE = [arch for _, arch in (*ARCHITECTURES.values(), *LLAMA_ARCHITECTURES.values())]
# The paper's block as GPT-2 / OpenAI GPT compute it, and a rotary block as Llama computes it
PAPER_BLOCK = {"normalization": "layernorm", "n_kv_head": None, "qk_norm": False, "tie_embeddings": True, "bias": True}
LLAMA_BLOCK = {"norm": "pre", "normalization": "rmsnorm", "activation": "swiglu", "bias": False}
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
    kinds = {kind for kind, _ in (*ARCHITECTURES.values(), *LLAMA_ARCHITECTURES.values())}
    return data.get("model_type") in kinds


def _differences(config: GPTConfig, wanted: dict) -> list[str]:
    return [f"{k} {getattr(config, k)!r} (not {v!r})" for k, v in wanted.items() if getattr(config, k) != v]


def architecture(config: GPTConfig) -> tuple[str, str]:
    """transformers' (model_type, class) that computes `config`'s model; ValueError naming what no
    stock class computes."""
    if config.positions == "rope":
        wrong = _differences(config, LLAMA_BLOCK)
        if wrong:
            raise ValueError(f"a rotary model exports as Llama, and this one has {', '.join(wrong)}")
        return LLAMA_ARCHITECTURES[config.qk_norm]
    wrong = _differences(config, PAPER_BLOCK)
    if config.activation not in ("gelu", "gelu_tanh"):
        wrong.append(f"activation {config.activation!r} (not 'gelu')")
    if wrong:
        raise ValueError(
            f"GPT-2 and OpenAI GPT compute the paper's block, and this one has {', '.join(wrong)}; "
            "a Llama-style block exports with positions 'rope'"
        )
    return ARCHITECTURES[config.norm]


def hf_config(config: GPTConfig) -> dict:
    kind, architecture_name = architecture(config)
    if config.positions == "rope":
        return _llama_config(config, kind, architecture_name)
    return _gpt2_config(config, kind, architecture_name)


def gpt2_shape(config: GPTConfig) -> dict:
    """`config`'s sizes and dropouts in the names transformers' GPT-2 and OpenAI GPT configs use."""
    return {
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
    }


def _gpt2_config(config: GPTConfig, kind: str, architecture: str) -> dict:
    shared = {"model_type": kind, "architectures": [architecture], **gpt2_shape(config)}
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
    if data["model_type"] in {kind for kind, _ in LLAMA_ARCHITECTURES.values()}:
        return _llama_from_hf(data)
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
        norm_eps=data.get("layer_norm_epsilon", 1e-5),
    )


def _prefix(config: GPTConfig) -> dict[str, str]:
    if config.norm == "pre":
        return {"embed": "transformer.wte.weight", "positions": "transformer.wpe.weight", "blocks": "transformer.h"}
    return {
        "embed": "transformer.tokens_embed.weight",
        "positions": "transformer.positions_embed.weight",
        "blocks": "transformer.h",
    }


def to_hf(state: dict[str, torch.Tensor], config: GPTConfig, positions: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """transformers' tensors for our `state` (a GPT's state_dict); `positions` is its position table."""
    if config.positions == "rope":
        return _llama_to_hf(state, config)
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
    if config.positions == "rope":
        return _llama_from_tensors(tensors, config)
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


# ---- Llama and Qwen3 ---------------------------------------------------------------------------------
# name stems inside block i (ours -> theirs); fused matrices are split in the order of their rows
LLAMA_BLOCK_NAMES = [
    ("attn.qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("attn.proj", ("self_attn.o_proj",)),
    ("attn.q_norm", ("self_attn.q_norm",)),
    ("attn.k_norm", ("self_attn.k_norm",)),
    ("ffn.up", ("mlp.gate_proj", "mlp.up_proj")),
    ("ffn.down", ("mlp.down_proj",)),
    ("norm1", ("input_layernorm",)),
    ("norm2", ("post_attention_layernorm",)),
]


def _llama_config(config: GPTConfig, kind: str, architecture: str) -> dict:
    data = {
        "model_type": kind,
        "architectures": [architecture],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.context_length,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
        "attention_bias": False,
        "attention_dropout": config.attention_dropout,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.tie_embeddings,
    }
    return {**data, "mlp_bias": False} if kind == "llama" else {**data, "use_sliding_window": False}


def _llama_from_hf(data: dict) -> GPTConfig:
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"rope scaling {rope.get('rope_type') or rope.get('type')!r} is not read; only plain RoPE")
    if data.get("attention_bias") or data.get("mlp_bias") or data.get("hidden_act", "silu") != "silu":
        raise ValueError("only a bias-free Llama with SiLU gates (SwiGLU) is read")
    d_model, n_head = data["hidden_size"], data["num_attention_heads"]
    if data.get("head_dim") not in (None, d_model // n_head):
        raise ValueError(f"head_dim {data['head_dim']} is not hidden_size / num_attention_heads ({d_model // n_head})")
    kv = data.get("num_key_value_heads") or n_head
    return GPTConfig(
        vocab_size=data["vocab_size"],
        context_length=data["max_position_embeddings"],
        n_layer=data["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=None if kv == n_head else kv,
        d_model=d_model,
        d_ff=data["intermediate_size"],
        dropout=0.0,
        attention_dropout=data.get("attention_dropout", 0.0),
        init_std=data.get("initializer_range", 0.02),
        embed_scale=False,
        qk_norm=data["model_type"] == "qwen3",
        tie_embeddings=data.get("tie_word_embeddings", False),
        norm_eps=data.get("rms_norm_eps", 1e-6),
        rope_base=float(rope.get("rope_theta", data.get("rope_theta", 10000.0))),
        **{**LLAMA_BLOCK, "positions": "rope"},
    )


def _llama_to_hf(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    scale = math.sqrt(config.d_model) if config.embed_scale else 1.0
    out = {"model.embed_tokens.weight": state["embed.weight"] * scale}
    kv = config.kv_heads * config.head_dim
    splits = {"attn.qkv": [config.d_model, kv, kv], "ffn.up": [config.d_ff, config.d_ff]}
    for i in range(config.n_layer):
        for ours, theirs in LLAMA_BLOCK_NAMES:
            weight = state.get(f"blocks.{i}.{ours}.weight")
            if weight is None:  # q_norm, k_norm without qk_norm
                continue
            parts = weight.split(splits[ours]) if ours in splits else (weight,)
            for name, part in zip(theirs, parts, strict=True):
                out[f"model.layers.{i}.{name}.weight"] = part
    # a tied output layer is the scaled embedding: scale the final norm's gain back
    out["model.norm.weight"] = state["final_norm.weight"] / (scale if config.tie_embeddings else 1.0)
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def _llama_from_tensors(tensors: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    state = {"embed.weight": tensors["model.embed_tokens.weight"], "final_norm.weight": tensors["model.norm.weight"]}
    for i in range(config.n_layer):
        for ours, theirs in LLAMA_BLOCK_NAMES:
            if ours.startswith("attn.") and ours.endswith("_norm") and not config.qk_norm:
                continue
            parts = [tensors[f"model.layers.{i}.{name}.weight"] for name in theirs]
            state[f"blocks.{i}.{ours}.weight"] = parts[0] if len(parts) == 1 else torch.cat(parts)
    state["head.weight"] = state["embed.weight"] if config.tie_embeddings else tensors["lm_head.weight"]
    return state
