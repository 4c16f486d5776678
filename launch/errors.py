"""User mistakes versus bugs.

A `UserError` (or one of gpt_core's ValueError subclasses, which the CLI adds to the list it
catches) is something the user can fix: the CLI prints its one-line message and exits with status
2. Anything else is a bug and keeps its traceback. This module imports nothing heavy: the data
preparation's worker processes raise UserError too.
"""

import errno
import tempfile
from pathlib import Path

# What a full disk, a quota or a file-size limit (RLIMIT_FSIZE, Slurm's) looks like to a write.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class UserError(Exception):
    """A problem in the user's input or environment; the message names it and the fix."""


def is_disk_full(error: BaseException) -> bool:
    return getattr(error, "errno", None) in DISK_FULL_ERRNOS


def write_failure(folder: Path) -> OSError | None:
    """Why nothing can be written in `folder`, or None when something can. Probed with a temporary
    file: a permission check would say yes to root without CAP_DAC_OVERRIDE and on read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return e


def check_writable(path, flag: str, kind: str = "folder") -> None:
    """One line, before any work, when `path` (given as `flag`) cannot be written as a `kind` ("folder"
    or "file"): empty, under a file, a file where a folder is wanted or the reverse, or in a folder
    this process may not write to. Creates nothing that stays."""
    if not str(path).strip():
        raise UserError(f"{flag} is empty; give a {kind} path")
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so nothing can be made under it; choose another {flag}")
    if existing == path and path.is_dir() != (kind == "folder"):
        raise UserError(f"{flag} {path} is a {'folder' if path.is_dir() else 'file'}; give a {kind} path")
    folder = existing if existing.is_dir() else existing.parent
    if failure := write_failure(folder):
        raise UserError(
            f"{flag} {path}: cannot write in {folder} ({failure.strerror}); choose a folder you can write to"
        )
