"""Every option defined once: the config fields, their validation, and the CLI generated from them."""

import dataclasses

import click
import pytest

from launch.cli import cli, train_command
from launch.errors import UserError
from launch.settings.config import SMOKE_DATA, DataConfig, TrainConfig, smoke_config
from launch.settings.fields import flag_of, leaf_fields, replace_paths


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
