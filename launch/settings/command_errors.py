"""How a command's mistakes reach the user: user errors (ours, gpt_core's, click's usage mistakes) as
one `error: <problem>; <fix>` line and exit status 2; a signal's stop with its own status; real
bugs keep their traceback."""

from __future__ import annotations

import functools
import sys

import click

from gpt_core import CheckpointError, ConfigError, GenerationError, TokenizerError
from launch.errors import UserError
from launch.runtime.processes import TrainingInterrupted, rank_prefix

USER_ERRORS = (UserError, ConfigError, GenerationError, CheckpointError, TokenizerError)


def user_errors_exit(fn):
    """Run a command; turn user errors into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            click.echo(f"{rank_prefix()}error: {e}", err=True)
            sys.exit(2)
        except TrainingInterrupted as e:
            click.echo(f"{rank_prefix()}{e}", err=True)
            sys.exit(e.exit_code)
        except (MemoryError, RuntimeError) as e:  # e.g. a context far past this machine's memory
            if isinstance(e, RuntimeError) and not _out_of_memory(e):
                raise
            click.echo(
                f"{rank_prefix()}error: out of memory; lower --batch-size, or the model's context_length "
                "or size (--preset, --model-config)",
                err=True,
            )
            sys.exit(2)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, without saving
            click.echo(
                f"{rank_prefix()}interrupted twice: stopped at once without saving; "
                "continue from the last checkpoint with --resume auto",
                err=True,
            )
            sys.exit(130)

    return wrapper


class OneLineUsageErrors:
    """A click command or group whose usage mistakes (an unknown option, a value that is not one of
    the choices, a missing argument) are one `error:` line and exit 2, as every other user mistake
    is, instead of click's three-line usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as e:
            command = e.ctx.command_path if getattr(e, "ctx", None) else self.name
            click.echo(f"{rank_prefix()}error: {e.format_message().rstrip('.')}; see {command} --help", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)


class Command(OneLineUsageErrors, click.Command):
    """A command run on its own (a recipe)."""


class Group(OneLineUsageErrors, click.Group):
    """`gpt-launch`: its subcommands' usage mistakes reach the group's main, which says them."""


def _out_of_memory(error: RuntimeError) -> bool:
    """torch's own allocation failures (CPU and CUDA) are RuntimeErrors, not MemoryErrors."""
    text = str(error).lower()
    return "can't allocate memory" in text or "out of memory" in text
