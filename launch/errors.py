"""User mistakes versus bugs.

A `UserError` (or one of gpt_core's ValueError subclasses, which the CLI adds to the list it
catches) is something the user can fix: the CLI prints its one-line message and exits with status
2. Anything else is a bug and keeps its traceback. This module imports nothing heavy: the data
preparation's worker processes raise UserError too.
"""

import errno

# What a full disk, a quota or a file-size limit (RLIMIT_FSIZE, Slurm's) looks like to a write.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class UserError(Exception):
    """A problem in the user's input or environment; the message names it and the fix."""


def is_disk_full(error: BaseException) -> bool:
    return getattr(error, "errno", None) in DISK_FULL_ERRNOS
