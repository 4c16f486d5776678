"""The command line's options, generated from the settings' fields: each option is defined once (in
config.py for train's, commands.py for the other commands'), with its type, default, help and bounds."""

from __future__ import annotations

import types
import typing

import click

from .fields import choices_of, flag_of, get_path, leaf_fields


def _without_none(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    return args[0] if optional else annotation


def _click_option(dotted: str, f, annotation, default, show_default: bool):
    described = "[default:" in f.metadata["help"]  # the help says it better than the value would
    kwargs = {"help": f.metadata["help"], "default": default, "show_default": show_default and default is not None}
    kwargs["show_default"] = kwargs["show_default"] and not described
    base, choices = _without_none(annotation), choices_of(annotation)
    if base is bool:
        kwargs["is_flag"] = True
    elif choices and int in typing.get_args(annotation):
        kwargs["type"] = IntOrWord(choices)
    elif choices:
        kwargs["type"] = click.Choice(choices)
    elif typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if args[-1] is Ellipsis:
            kwargs.update(multiple=True, type=args[0])
        else:
            kwargs.update(nargs=len(args), type=args[0])
    else:
        kwargs["type"] = base
    flags = [flag_of(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
    if base is bool and f.metadata.get("on_resume") == "free":  # a resumed session may turn it off again
        flags[0] = f"{flags[0]}/--no-{flags[0][2:]}"
    return click.option(*flags, dotted.replace(".", "__"), **kwargs)


class IntOrWord(click.ParamType):
    """A number, or one of a few words (`--batch-size 8`, `--batch-size auto`)."""

    name = "integer"

    def __init__(self, words: tuple[str, ...]):
        self.words = words
        self.name = f"integer|{'|'.join(words)}"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value in self.words:
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or one of {', '.join(self.words)}", param, ctx)


def config_options(defaults, only: tuple[str, ...] | None = None, show_default: bool = True, leave_out: tuple = ()):
    """click options for the fields of a settings dataclass (TrainConfig, or a command's settings), with
    `defaults`' values as their defaults: all, or those whose dotted name starts with one of `only`,
    except those named in `leave_out`."""
    options = [
        _click_option(dotted, f, annotation, get_path(defaults, dotted), show_default)
        for dotted, f, annotation in leaf_fields(type(defaults))
        if (only is None or dotted.startswith(only)) and dotted not in leave_out
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def given_options(ctx: click.Context, params: dict) -> dict:
    """{"data.source": value, ...} for the config options typed on the command line, and only those."""
    return {
        name.replace("__", "."): value
        for name, value in params.items()
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
    }
