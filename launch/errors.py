"""User mistakes versus bugs.

A `UserError` (or one of gpt_core's ValueError subclasses) is something the user can fix: the CLI
prints its one-line message and exits with status 2.  Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input or environment; the message names it and the fix."""


def __getattr__(name: str):
    # USER_ERRORS names gpt_core's torch-backed errors: resolved on use, so that importing UserError
    # (as the data preparation's worker processes do) does not import torch
    if name == "USER_ERRORS":
        from gpt_core import CheckpointError, ConfigError, GenerationError

        return (UserError, ConfigError, GenerationError, CheckpointError)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
