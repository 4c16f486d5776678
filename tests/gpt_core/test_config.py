import json

import pytest

from gpt_core.config import PRESETS, ConfigError, GPTConfig, get_preset


def test_paper_preset_matches_the_paper():
    c = get_preset("paper")
    assert (c.n_layer, c.n_head, c.d_model, c.d_ff, c.context_length, c.vocab_size, c.dropout) == (
        6,
        8,
        512,
        2048,
        256,
        50257,
        0.1,
    )
    assert c.norm == "post" and c.head_dim == 64


def test_paper_parameter_count():
    c = get_preset("paper")
    assert round(c.num_params() / 1e6, 1) == 44.6
    assert round(c.vocab_size * c.d_model / 1e6, 1) == 25.7


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_json_round_trip(tmp_path, name):
    path = tmp_path / "config.json"
    PRESETS[name].save(path)
    assert GPTConfig.load(path) == PRESETS[name]
    assert json.loads(path.read_text())["d_model"] == PRESETS[name].d_model


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"d_model": 510, "n_head": 8}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"dropout": 1.5}, "dropout"),
        ({"norm": "middle"}, "norm"),
        ({"context_length": -4}, "context_length"),
    ],
)
def test_invalid_configs_fail_clearly(changes, words):
    with pytest.raises(ConfigError, match=words):
        GPTConfig(**changes)


def test_unknown_preset_and_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*paper"):
        get_preset("huge")
    (tmp_path / "c.json").write_text('{"d_model": 64, "n_heads": 2}')
    with pytest.raises(ConfigError, match="unknown model config field"):
        GPTConfig.load(tmp_path / "c.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GPTConfig.load(tmp_path / "bad.json")
