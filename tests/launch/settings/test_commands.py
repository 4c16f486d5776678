"""launch/settings/commands.py: the settings of generate, evaluate, info and bench, each option
generated from one definition, shared with train's where the setting is the same."""

import dataclasses
import typing

import pytest

from launch.settings.commands import (
    DEFAULT_NOTE,
    BenchSettings,
    EvaluateSettings,
    ExportSettings,
    GenerateSettings,
    InfoSettings,
    ReportSettings,
    ShareSettings,
)
from launch.settings.config import TrainConfig
from launch.settings.fields import flag_of, leaf_fields
from tests.helpers import invoke

COMMANDS = {"generate": GenerateSettings, "evaluate": EvaluateSettings, "info": InfoSettings, "bench": BenchSettings}
EVERY_COMMAND = {**COMMANDS, "report": ReportSettings, "share": ShareSettings, "export": ExportSettings}
TRAIN = {dotted: (f, annotation) for dotted, f, annotation in leaf_fields(TrainConfig)}


def without_none(annotation):
    return {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_shared_setting_is_trains_definition(command):
    cls = COMMANDS[command]
    hints, shared = typing.get_type_hints(cls), 0
    for f in dataclasses.fields(cls):
        if "same_as" not in f.metadata:
            continue
        shared += 1
        theirs, annotation = TRAIN[f.metadata["same_as"]]
        assert flag_of(f) == flag_of(theirs)
        assert without_none(hints[f.name]) == without_none(annotation), f.name
        for bound in ("at_least", "above", "at_most", "zero_means_all"):
            assert f.metadata[bound] == theirs.metadata[bound], (f.name, bound)
        # the same words, but for the default, which a command may set (and then says so)
        assert DEFAULT_NOTE.sub("", f.metadata["help"]).rstrip(".") == DEFAULT_NOTE.sub(
            "", theirs.metadata["help"]
        ).rstrip(".")
    assert shared >= 2  # each of these commands shares at least the batch size or the device's precision


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_every_option_of_the_command_is_a_field_of_its_settings(command):
    from launch.cli import cli

    params = {p.name for p in cli.commands[command].params if p.param_type_name == "option"} - {"help"}
    fields = {f.name for f in dataclasses.fields(EVERY_COMMAND[command])}
    trains = {dotted.replace(".", "__") for dotted in TRAIN}
    assert fields <= params and params <= fields | trains, params ^ fields


def test_the_batch_size_reads_the_same_in_every_command():
    helps = {name: invoke(name, "--help").output for name in ("train", "evaluate", "info", "bench")}
    opening = "Rows per process per (micro-)batch"
    assert all(opening in " ".join(h.split()) for h in helps.values()), helps


@pytest.mark.parametrize("command", ["evaluate", "info", "bench"])
def test_a_batch_size_of_auto_is_for_training_only(command, tmp_path):
    result = invoke(command, *(["TMP/none"] if command == "evaluate" else []), "--batch-size", "auto")
    assert result.exit_code == 2 and "error: --batch-size auto sizes training batches" in result.stderr


def test_bench_names_fp32_as_no_mixed_precision():
    assert BenchSettings(mixed_precision="no").precision == "fp32"
    assert BenchSettings(mixed_precision="bf16").precision == "bf16"
    assert BenchSettings().precision is None  # chosen by the device
