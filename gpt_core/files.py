"""Writing a file whole or not at all, the one way every part of the project writes one that is
read back: the text goes to a temporary file beside the target, reaches the disk (fsync), and is
renamed over the target. A reader sees the old file or the new one, never a part; a failure
(a full disk) leaves the target as it was and no temporary behind. Imports nothing heavy: the
data workers use it too."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

UMASK = os.umask(0o022)  # read once (reading it means setting it), and put back
os.umask(UMASK)


def write_atomically(path, data: str | bytes) -> Path:
    """Replace `path` with `data` (text as UTF-8) in one step; returns the path."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(partial, 0o666 & ~UMASK)  # mkstemp makes it 0600; the target gets a normal file's mode
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def write_json(path, data, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """`data` as JSON (one line per record when `indent` is None), written atomically."""
    return write_atomically(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
