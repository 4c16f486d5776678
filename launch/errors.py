"""User mistakes versus bugs.

A `UserError` (or one of gpt_core's ValueError subclasses) is something the user can fix: the CLI
prints its one-line message and exits with status 2.  Anything else is a bug and keeps its traceback.
"""

from gpt_core import CheckpointError, ConfigError, GenerationError


class UserError(Exception):
    """A problem in the user's input or environment; the message names it and the fix."""


USER_ERRORS = (UserError, ConfigError, GenerationError, CheckpointError)
