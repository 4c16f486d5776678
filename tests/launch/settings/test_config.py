"""Every option defined once: the config fields, their validation, and the CLI generated from them."""

import dataclasses
import json

import click
import pytest

from launch.cli import cli, train_command
from launch.errors import UserError
from launch.settings.config import SMOKE_DATA, DataConfig, TrainConfig, smoke_config
from launch.settings.fields import flag_of, leaf_fields, replace_paths
from tests.faults import (
    one_error_line,
    train,
    train_args,
    with_file_size_limit,
)
from tests.helpers import invoke, train_here


def test_every_config_field_has_exactly_one_cli_option_and_back():
    command = train_command()
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    fields = {dotted.replace(".", "__"): f for dotted, f, _ in leaf_fields(TrainConfig)}
    assert set(options) - {"smoke"} == set(fields), "a field without a flag, or a flag without a field"
    for name, f in fields.items():
        assert options[name].opts == [flag_of(f)] and options[name].help == f.metadata["help"]
    assert len({o.opts[0] for o in options.values()}) == len(options)  # no flag spelled twice


def test_choices_come_from_the_literal_types():
    options = {p.name: p for p in train_command().params}
    assert list(options["layout"].type.choices) == ["packed", "padded", "documents"]
    assert list(options["data__split_mode"].type.choices) == ["paper", "shuffle", "source"]
    assert list(options["tracker"].type.choices) == ["none", "wandb", "tensorboard"]
    assert options["betas"].nargs == 2 and options["prompts"].multiple


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"lr": -1.0}, "--lr must be > 0"),
        ({"tracker": "mlflow"}, "--tracker must be one of none, wandb, tensorboard"),
        ({"layout": "ragged"}, "--layout must be one of packed, padded, documents"),
        ({"grad_accum": 0}, "--grad-accum must be >= 1"),
        ({"max_minutes": 0}, "--max-minutes must be > 0"),
        ({"mixed_precision": "fp8"}, "--mixed-precision must be one of no, fp16, bf16"),
    ],
)
def test_bad_training_configs_name_the_flag(bad, words):
    with pytest.raises(UserError, match=words):
        TrainConfig(**bad)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"max_samples": 2}, "--max-samples must be >= 3"),
        ({"split_mode": "random"}, "--split-mode must be one of paper, shuffle, source"),
        ({"train_fraction": 0.8, "validation_fraction": 0.2}, "must leave room for a test split"),
    ],
)
def test_bad_data_configs_name_the_flag(bad, words):
    with pytest.raises(UserError, match=words):
        DataConfig(**bad)


def test_max_samples_zero_means_every_story():
    assert DataConfig(max_samples=0).max_samples is None  # as --max-samples 0 says, without the CLI's help


def test_one_seed():
    assert "seed" not in {f.name for f in dataclasses.fields(DataConfig)}
    assert [dotted for dotted, _, _ in leaf_fields(TrainConfig) if "seed" in dotted] == ["seed"]


def test_the_paper_values_live_in_the_defaults_and_the_smoke_run_derives_from_them():
    from recipes.tinystories import RECIPE

    assert TrainConfig() == RECIPE  # the recipe restates nothing
    paper = TrainConfig()
    assert (paper.lr, paper.betas, paper.grad_accum, paper.data.max_samples) == (2e-4, (0.9, 0.95), 8, 270_000)
    smoke = smoke_config()
    assert smoke.data.source == str(SMOKE_DATA) and smoke.preset == "small"
    assert (smoke.betas, smoke.weight_decay, smoke.patience) == (paper.betas, paper.weight_decay, paper.patience)


def test_settings_round_trip_through_json():
    cfg = replace_paths(TrainConfig(), {"data.source": "x.jsonl", "lr": 1e-3, "prompts": ("Hi",), "betas": (0.8, 0.9)})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_help_shows_every_option_with_the_paper_defaults():
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    for words in (
        "--smoke",
        "--data",
        "--resume",
        "--allow-changes",
        "--betas",
        "--grad-clip",
        "--keep-last",
        "--min-chars",
        "--train-fraction",
        "--validation-fraction",
        "--seed",
        "270000",
        "0.0002",
    ):
        assert words in result.output, words


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "missing/stories.jsonl"], "data path missing/stories.jsonl does not exist"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--lr", "-0.001"], "--lr must be > 0, got -0.001"),
        (["--preset", "gigantic"], "unknown preset 'gigantic'"),
    ],
)
def test_bad_training_input_is_one_line(tmp_path, args, words):
    one_error_line(train(tmp_path / "run", *args, check=False), words)


def test_impossible_model_config_file(tmp_path):
    (tmp_path / "model.json").write_text(
        json.dumps({"d_model": 64, "n_head": 6, "context_length": 32, "n_layer": 1, "d_ff": 64})
    )
    proc = train(tmp_path / "run", "--model-config", str(tmp_path / "model.json"), check=False)
    one_error_line(proc, "d_model (64) must be divisible by n_head (6)")


def test_an_output_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    proc = train(tmp_path / "file" / "run", "--max-steps", "2", "--data-cache", tmp_path / "cache", check=False)
    one_error_line(proc, "is a file, so nothing can be made under it; choose another --output-dir")
    assert not (tmp_path / "cache").exists(), "checked before any data work"


def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path):
    proc = train(tmp_path / "run", "--mixed-precision", "fp16", "--max-steps", "2", check=False)
    one_error_line(proc, "fp16 mixed precision needs a GPU")
    assert not (tmp_path / "run").exists(), "a failed run leaves no empty output folder"


@pytest.mark.slow
def test_a_full_disk_at_the_start_is_one_line_and_leaves_no_half_written_settings(tmp_path):
    out = tmp_path / "run"
    invoke("prepare", "--data", SMOKE_DATA, "--data-cache", out.parent / "cache", check=True)  # the cache is ready
    proc = with_file_size_limit(train_args(out), 1024)  # train_config.json (~3 kB) cannot be written
    one_error_line(proc, "could not write")
    assert "train_config.json (no space left" in proc.stderr
    assert not list(out.glob("train_config.json*"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prompt", ""], "--prompt '': the prompt is empty"),
        (["--prompt", "word" + " word" * 40], "the prompt has 41 tokens but the model's context is 32"),
        (["--betas", "1.5", "0.95"], "--betas must be two numbers in [0, 1), got 1.5 0.95"),
        (["--betas", "-0.1", "0.95"], "--betas must be two numbers in [0, 1)"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--seed", "4294967296"], "--seed must be <= 4,294,967,295"),
        (["--collective-timeout", "1e30"], "--collective-timeout must be <= 31,536,000"),
        (["--output-dir", ""], "--output-dir is empty"),
        (["--data", ""], "--data is empty"),
        (["--batch-size", "auto"], "--batch-size auto finds the largest micro-batch that fits in a GPU's memory"),
    ],
)
def test_more_bad_training_input_is_one_line_before_any_work(tmp_path, args, words):
    result = train_here(tmp_path / "run", "--data-cache", tmp_path / "cache", *args, check=False)
    one_error_line(result, words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_model_config_that_is_a_folder_is_one_line(tmp_path):
    one_error_line(
        train(tmp_path / "run", "--model-config", tmp_path, check=False), "is a folder; pass its config.json"
    )


def test_a_data_cache_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    one_error_line(train(tmp_path / "run", "--data-cache", tmp_path / "cache", check=False), "--data-cache")


def test_a_context_past_memory_is_one_line(tmp_path):
    config = {"n_layer": 1, "n_head": 1, "d_model": 8, "d_ff": 8, "context_length": 2**36}
    (tmp_path / "model.json").write_text(json.dumps(config))
    result = train(tmp_path / "run", "--model-config", tmp_path / "model.json", "--layout", "padded", check=False)
    one_error_line(result, "out of memory; lower --batch-size, or the model's context_length")


def test_a_context_longer_than_the_data_names_the_real_setting(tmp_path):
    config = {"n_layer": 1, "n_head": 1, "d_model": 8, "d_ff": 8, "context_length": 4096}
    (tmp_path / "model.json").write_text(json.dumps(config))
    result = train(tmp_path / "run", "--model-config", tmp_path / "model.json", check=False)
    one_error_line(result, "a shorter context_length in a --model-config file")
    assert "--context " not in result.stderr


def test_a_model_config_field_of_the_wrong_type_is_one_line_naming_field_and_file(tmp_path):
    from gpt_core import get_preset

    path = tmp_path / "model.json"
    path.write_text(json.dumps({**get_preset("tiny").to_dict(), "qk_norm": "false"}))
    result = train_here(tmp_path / "run", "--model-config", path, "--data-cache", tmp_path / "cache", check=False)
    one_error_line(result, f"model config {path}: invalid model config: qk_norm must be a JSON boolean")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
