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


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("qk_norm", "false", "qk_norm must be a JSON boolean (true or false), got 'false'"),
        ("bias", "false", "bias must be a JSON boolean (true or false), got 'false'"),
        ("qk_norm", "yes", "qk_norm must be a JSON boolean"),
        ("tie_embeddings", 1, "tie_embeddings must be a JSON boolean (true or false), got 1"),
        ("n_layer", 2.0, "n_layer must be an integer, got 2.0"),
        ("n_kv_head", "2", "n_kv_head must be an integer or null, got '2'"),
        ("dropout", "0.1", "dropout must be a number, got '0.1'"),
        ("rope_base", True, "rope_base must be a number, got True"),
        ("positions", 3, "positions must be a string, got 3"),
    ],
)
def test_every_field_read_from_json_is_checked_against_its_type(tmp_path, field, value, words):
    """A JSON "false" is a true string: read as it is, it would build the model with the feature on."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**PRESETS["tiny"].to_dict(), field: value}))
    with pytest.raises(ConfigError) as error:
        GPTConfig.load(path)
    assert str(error.value).startswith(f"model config {path}: ") and words in str(error.value)
    assert "\n" not in str(error.value)


def test_a_config_that_is_not_json_says_how_to_mend_it(tmp_path):
    (tmp_path / "config.json").write_text('{"n_layer": 2,\n "qk_norm": False}')
    with pytest.raises(ConfigError, match=r"not valid JSON \(Expecting value at line 2, column 13\); mend it there"):
        GPTConfig.load(tmp_path / "config.json")
