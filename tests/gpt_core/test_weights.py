import pickle

import pytest
import torch

from gpt_core import GPT, CheckpointError, get_preset, load_pretrained, save_pretrained


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(get_preset("tiny")).eval()
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert loaded.head.weight is loaded.embed.weight
    idx = torch.randint(0, 50257, (1, 8))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


def test_the_state_dict_of_a_compiled_wrapper_saves_under_the_models_own_names(tmp_path):
    """torch.compile's wrapper (what Accelerate makes under a dynamo backend) names every key
    `_orig_mod.<name>`: saved as they are, the tied head was a second name for the embedding's memory,
    which safetensors refuses."""
    from gpt_core import save_state_dict

    torch.manual_seed(0)
    model = GPT(get_preset("tiny"))
    wrapped = torch.compile(model)  # nothing is compiled until it runs
    assert next(iter(wrapped.state_dict())).startswith("_orig_mod.")
    save_state_dict(wrapped.state_dict(), model.config, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_pretrained(tmp_path)


def test_truncated_weights_are_refused(tmp_path):
    save_pretrained(GPT(get_preset("tiny")), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_pretrained(tmp_path)


def test_weights_of_another_config_are_refused(tmp_path):
    save_pretrained(GPT(get_preset("tiny")), tmp_path)
    get_preset("tiny").replace(d_model=64).save(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="corrupt or does not match"):
        load_pretrained(tmp_path)


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_in_place_of_the_weights_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_pretrained(GPT(get_preset("tiny")), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError):
        load_pretrained(tmp_path)
    assert not (tmp_path / "PWNED").exists()
