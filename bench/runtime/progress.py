"""Progress that reads well in a terminal and in a log.

    for k, ray in enumerate(progress(rays, "ls rays", every_item=True)):
        ...

On a terminal: a tqdm bar that disappears when done. Elsewhere (a log file, a Slurm or CI job):
the same tqdm, one line per update, each item (`every_item`, for loops of a few long items such as
rays) or at most every `LOG_INTERVAL` seconds, plus a final line. tqdm's own output off a terminal
separates its refreshes with carriage returns, which a log file shows as one endless line.
"""
from __future__ import annotations

import io
import re
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_INTERVAL = 30.0          # seconds between lines in a log
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines(io.TextIOBase):
    """A text file that writes each tqdm refresh as a line of its own."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, s: str) -> int:
        text = ANSI.sub("", s).replace("\r", "").strip()     # nested bars move the cursor: not in a log
        count = text.split("[")[0]              # the bar and n/total: a repeat differs only in its rate
        if text and count != self.last:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = count
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None, every_item: bool = False,
             **kwargs) -> tqdm:
    """tqdm over `iterable`, configured for a terminal or for a log (see the module docstring)."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kwargs)
    return tqdm(iterable, desc=desc, total=total, file=_Lines(sys.stderr), leave=True, ncols=100, ascii=True,
                mininterval=0.0 if every_item else LOG_INTERVAL, miniters=1, **kwargs)
