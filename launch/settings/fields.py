"""The machinery of a setting: a dataclass field that carries its CLI flag, help text, resume
policy and bounds, checked in one place, and the walk over nested settings that the CLI's options
and the resume checks both use. The settings themselves are in config.py (train's) and commands.py
(the other commands')."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Literal

from launch.errors import UserError


def setting(
    default=None,
    help="",
    *,
    flag=None,
    short=None,
    on_resume="warn",
    at_least=None,
    above=None,
    at_most=None,
    factory=None,
    zero_means_all=False,
):
    """A dataclass field carrying its CLI flag (and a one-letter `short` one), help text, resume policy
    and bounds (`zero_means_all`: 0 is allowed below `at_least`, meaning no limit)."""
    meta = {
        "help": help,
        "flag": flag,
        "short": short,
        "on_resume": on_resume,
        "at_least": at_least,
        "above": above,
        "at_most": at_most,
        "zero_means_all": zero_means_all,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def flag_for(cls, dotted: str) -> str:
    """The flag of the setting `dotted` ("init_from", "data.tokenizer") of settings class `cls`."""
    return next(flag_of(f) for name, f, _ in leaf_fields(cls) if name == dotted)


def choices_of(annotation) -> tuple | None:
    """('a', 'b') for Literal['a', 'b'] (also inside `| None`), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def check_fields(config) -> None:
    """Check every field against its type's choices and its declared bounds; one line per problem."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is not None and not dataclasses.is_dataclass(value):
            _check(f, hints[f.name], value, flag_of(f))


def _check(f: dataclasses.Field, annotation, value, flag: str) -> None:
    choices = choices_of(annotation)
    number_or_word = int in typing.get_args(annotation)  # e.g. a batch size, or "auto"
    if choices and value not in choices and not (number_or_word and isinstance(value, int)):
        what = "a whole number or " if number_or_word else ""
        raise UserError(f"{flag} must be {what}one of {', '.join(map(str, choices))}, got {value!r}; pick one of those")
    if isinstance(value, str):
        return
    least, above, most = (f.metadata.get(k) for k in ("at_least", "above", "at_most"))
    zero = " (or 0 for all)" if f.metadata.get("zero_means_all") else ""
    if least is not None and value < least and not (zero and value == 0):
        raise UserError(f"{flag} must be >= {least}{zero}, got {value}; give {flag} {least} or more{zero}")
    if above is not None and not value > above:
        raise UserError(f"{flag} must be > {above}, got {value}; give {flag} a value above {above}")
    if most is not None and value > most:
        raise UserError(f"{flag} must be <= {most:,}, got {value:,}; give {flag} {most:,} or less")


# ---------------------------------------------------------------------------------------------
# Walking the fields: the CLI's options and the resume checks both come from here
# ---------------------------------------------------------------------------------------------
def leaf_fields(cls, prefix: str = ""):
    """(dotted name, field, type) for every setting, nested DataConfig fields included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


def get_path(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def replace_paths(config, changes: dict):
    """A copy of `config` with {"data.source": x, "lr": y} applied."""
    nested: dict[str, dict] = {}
    top = {}
    for dotted, value in changes.items():
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, sub in nested.items():
        top[head] = replace_paths(getattr(config, head), sub)
    return dataclasses.replace(config, **top) if top else config
