"""Progress that suits where the output goes: a live tqdm bar on a terminal; elsewhere (a Slurm log
file, CI, a pipe) a plain line every `REPORT_EVERY_S` and one at the end, since a bar redrawn with
carriage returns turns a whole run into one enormous line of a log file."""

from __future__ import annotations

import sys
import time
from typing import Protocol

REPORT_EVERY_S = 30.0


class Progress(Protocol):
    """What both kinds of progress do: a tqdm bar and `ProgressLines`."""

    def update(self, n: int = 1) -> object: ...
    def set_postfix(self, **values) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc) -> object: ...


def progress(
    total: int | None, desc: str, unit: str, initial: int = 0, enabled: bool = True, leave: bool = True
) -> Progress:
    """A tqdm bar when stderr is a terminal, else a `ProgressLines`; both are context managers with
    `update`, `set_postfix` and `close`. `enabled=False` (e.g. on every rank but the first) shows nothing."""
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)
    return ProgressLines(total, desc, unit, initial, enabled)


class ProgressLines:
    """The same progress as plain lines on stderr: `train: 40/320 steps (12%), loss=3.1`."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, enabled: bool = True):
        self.total, self.desc, self.unit, self.n, self.enabled = total, desc, unit, initial, enabled
        self.postfix = ""
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and time.monotonic() - self._last >= REPORT_EVERY_S:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.enabled:
            self._print()
            self.enabled = False

    def _print(self) -> None:
        self._last = time.monotonic()
        units = self.unit + ("es" if self.unit.endswith(("ch", "s")) else "s")
        done = f"{self.n:,}/{self.total:,} {units}" if self.total else f"{self.n:,} {units}"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        print(f"{self.desc}: {done}{share}{', ' + self.postfix if self.postfix else ''}", file=sys.stderr, flush=True)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
