"""The model's shape, as one small typed dataclass with named presets.

Derived values (head size, parameter count, FLOPs per token) are methods, so a config file only
ever holds the numbers a person chose.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .tokenizer import GPT2_VOCAB_SIZE


class ConfigError(ValueError):
    """A model configuration that cannot work; the message names the field and the fix."""


# A field's declared type (as written in GPTConfig), what a value of it must be, and how to say so.
_TYPES = {
    "bool": (lambda v: isinstance(v, bool), "a JSON boolean (true or false)"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "None": (lambda v: v is None, "null"),
}


def _type_problems(config) -> list[str]:
    """Each field whose value is not of its declared type: a config read from JSON or YAML can hold
    anything, and `"false"` is a true string."""
    problems = []
    for f in dataclasses.fields(config):
        kinds, value = f.type.replace(" ", "").split("|"), getattr(config, f.name)
        if not any(_TYPES[kind][0](value) for kind in kinds):
            problems.append(f"{f.name} must be {' or '.join(_TYPES[k][1] for k in kinds)}, got {value!r}")
    return problems


def read_config_json(path: str | Path) -> dict:
    """A config.json's object; anything else is a ConfigError saying how to mend the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model config {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"model config {path} is a folder; pass its config.json (a JSON file)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"model config {path} is not a text file; pass a JSON file of model fields") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"model config {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); mend it there "
            '(one JSON object of model fields, e.g. {"n_layer": 6, "qk_norm": false}) or put back a good copy'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f'model config {path} must hold one JSON object of model fields, e.g. {{"n_layer": 6}}')
    return data


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = GPT2_VOCAB_SIZE
    context_length: int = 256
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 512
    d_ff: int = 2048
    dropout: float = 0.1  # on the embedding sum and on every sub-layer's output, as the paper places it
    # Dropout on the attention weights themselves is GPT-2's addition, not the paper's; on CPU it also
    # forces the unfused T x T attention path (about 7 % of a training step), so it is off by default.
    attention_dropout: float = 0.0
    # "post": LayerNorm after each residual add, as the paper (and Vaswani et al.) place it.
    # "pre": LayerNorm before each sub-layer plus a final one; it tolerates higher learning
    # rates and deeper stacks because the residual stream is never normalised away.
    norm: str = "post"
    init_std: float = 0.02
    # The paper's choices, against GPT-2's: fixed sinusoids added to embeddings scaled by
    # sqrt(d_model), and GELU as erf; GPT-2 learns a position table, scales nothing, and uses GELU's
    # tanh approximation. These three let the `gpt2` preset compute exactly what GPT-2 does.
    positions: str = "sinusoidal"  # or "learned"
    embed_scale: bool = True  # multiply embeddings by sqrt(d_model)
    activation: str = "gelu"  # or "gelu_tanh"; "swiglu" (gated, SiLU) or "relu2" (ReLU squared)
    # Today's small-LM choices (Llama: rope, rmsnorm, swiglu, fewer key/value heads, no biases, no
    # embedding scale). Each defaults to the paper's.
    normalization: str = "layernorm"  # or "rmsnorm": no mean subtraction, no bias
    norm_eps: float = 1e-5
    rope_base: float = 10000.0  # with positions="rope": the rotation of pair i turns at base^(-2i/head_dim)
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None: one per query head
    qk_norm: bool = False  # RMSNorm over each head's queries and keys, before the rotation
    tie_embeddings: bool = True  # the output layer is the embedding matrix
    bias: bool = True  # biases in the linear layers and the LayerNorms

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:  # a JSON "false" is a true string: nothing below may read a value of the wrong type
            raise ConfigError("invalid model config: " + "; ".join(problems))
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model", "d_ff"):
            if getattr(self, name) < 1:  # an integer: checked above
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not problems and self.d_model % self.n_head:
            problems.append(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}); "
                f"try n_head in {[h for h in range(1, 17) if self.d_model % h == 0]}"
            )
        if not problems and self.head_dim % 2:
            problems.append(f"head size d_model/n_head = {self.head_dim} must be even")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.norm not in ("post", "pre"):
            problems.append(f"norm must be 'post' or 'pre', got {self.norm!r}")
        if not self.init_std > 0:
            problems.append(f"init_std must be positive, got {self.init_std}")
        for name, choices in (
            ("positions", ("sinusoidal", "learned", "rope")),
            ("activation", ("gelu", "gelu_tanh", "swiglu", "relu2")),
            ("normalization", ("layernorm", "rmsnorm")),
        ):
            if getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            problems.append(f"n_kv_head must divide n_head ({self.n_head}), got {self.n_kv_head!r}")
        for name in ("norm_eps", "rope_base"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    # ---- derived values -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def gated(self) -> bool:
        """Whether the feed-forward has a gate (SwiGLU): its input projection is then 2 x d_ff wide."""
        return self.activation == "swiglu"

    def _block_matrices(self) -> int:
        """Weights of one block's matrix products: q, k, v, the attention output, the feed-forward."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        return d * (d + 2 * kv) + d * d + d * self.d_ff * (3 if self.gated else 2)

    def num_params(self) -> int:
        """Trainable parameters, counting a tied embedding/output matrix once."""
        d, kv, f = self.d_model, self.kv_heads * self.head_dim, self.d_ff
        biases = (d + 2 * kv) + d + f * (2 if self.gated else 1) + d if self.bias else 0
        norm = d * (2 if self.normalization == "layernorm" and self.bias else 1)
        qk_norms = 2 * self.head_dim if self.qk_norm else 0
        block = self._block_matrices() + biases + 2 * norm + qk_norms
        final_norm = norm if self.norm == "pre" else 0
        positions = self.context_length * d if self.positions == "learned" else 0
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + positions + self.n_layer * block + final_norm + head

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward = 3x forward), counting matmuls only.

        6 * (non-embedding params + output head) plus attention's QK^T and AV, the usual
        accounting from the Chinchilla/PaLM appendices.
        """
        t = seq_len or self.context_length
        d = self.d_model
        matmul_params = self.n_layer * self._block_matrices() + self.vocab_size * d
        attention = self.n_layer * 2 * t * d  # QK^T and AV, causal half not discounted
        return 6 * matmul_params + 6 * attention

    def describe(self) -> str:
        """The architecture in one sentence, for model cards and `info`."""
        heads = f"{self.n_head} heads" + (f" sharing {self.kv_heads} key/value heads" if self.n_kv_head else "")
        activation = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "swiglu": "SwiGLU", "relu2": "ReLU²"}[self.activation]
        positions = {
            "sinusoidal": "sinusoidal positions",
            "learned": "learned positions",
            "rope": f"rotary positions (base {self.rope_base:g})",
        }[self.positions]
        norm = f"{self.norm}-{'LayerNorm' if self.normalization == 'layernorm' else 'RMSNorm'} with residuals"
        extras = [", QK-norm" if self.qk_norm else "", "" if self.bias else ", no biases"]
        head = "the output layer tied to the embedding" if self.tie_embeddings else "an untied output layer"
        return (
            f"{self.n_layer} decoder layers, {heads}, d_model {self.d_model}, feed-forward {self.d_ff} with "
            f"{activation}, {positions}, {norm}{''.join(extras)}, dropout {self.dropout}, context "
            f"{self.context_length} tokens, {head}"
        )

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, ignore_unknown: bool = False) -> GPTConfig:
        """`ignore_unknown`: read the model fields out of a larger record (a run summary's model)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if ignore_unknown:
            data = {k: v for k, v in data.items() if k in known}
        elif unknown:
            raise ConfigError(f"unknown model config field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GPTConfig:
        data = read_config_json(path)
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"model config {path}: {e}") from None

    def replace(self, **changes) -> GPTConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, GPTConfig] = {
    # The paper's model: ~44.6 M parameters, 25.7 M of them in the tied embedding.
    "paper": GPTConfig(),
    # The paper's model with pre-LN, which trains more stably at higher learning rates.
    "paper-preln": GPTConfig(norm="pre"),
    # A CPU-friendly model for smoke runs: trains visibly in a minute on two cores.
    "small": GPTConfig(n_layer=4, n_head=4, d_model=128, d_ff=512, context_length=128, norm="pre"),
    # The smallest useful shape, for tests.
    "tiny": GPTConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, context_length=32, dropout=0.0, norm="pre"),
    # OpenAI's GPT-2 small (124 M): loads its weights with --init-from, and trains GPT-2-sized models.
    "gpt2": GPTConfig(
        context_length=1024,
        n_layer=12,
        n_head=12,
        d_model=768,
        d_ff=3072,
        attention_dropout=0.1,
        norm="pre",
        positions="learned",
        embed_scale=False,
        activation="gelu_tanh",
    ),
    # `small`'s budget as a Llama-style model (llama2.c's TinyStories models, torchtitan, litgpt):
    # RoPE, RMSNorm, SwiGLU (2/3 of d_ff, so the feed-forward keeps its size), two key/value heads
    # for four query heads, no biases, no embedding scale, no dropout. Exports to LlamaForCausalLM.
    "llama-small": GPTConfig(
        n_layer=4,
        n_head=4,
        n_kv_head=2,
        d_model=128,
        d_ff=344,
        context_length=128,
        dropout=0.0,
        norm="pre",
        positions="rope",
        normalization="rmsnorm",
        activation="swiglu",
        embed_scale=False,
        bias=False,
    ),
}


def get_preset(name: str) -> GPTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
