"""Stopping cleanly: SIGINT and SIGTERM (Slurm's pre-emption signal) as exceptions, and training
loops that take them only between steps.

    with interruptible() as stop:
        for step in range(steps):
            ...                                    # a signal here is held, not raised
            if stop.requested or checkpoints.due(step):
                checkpoints.save("routers", state())
            stop.check()                           # raises KeyboardInterrupt / Terminated

Outside `interruptible`, SIGINT raises KeyboardInterrupt (Python's default) and SIGTERM raises
`Terminated` where the CLI installed `on_sigterm`, so `finally` blocks and the run directory's
clean-up run. Inside, a signal is recorded and raised at the next `check()`, after the loop has
saved a checkpoint of a consistent state (never half an optimizer step).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(BaseException):
    """SIGTERM (e.g. a Slurm pre-emption), raised in the main thread so that every cleanup runs."""


def on_sigterm(signum, frame):
    raise Terminated()


def exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


class Stop:
    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            signum, self.signum = self.signum, None
            raise exception_for(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[Stop]:
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():   # signals go to the main thread only
        yield stop
        return

    def hold(signum, frame):
        stop.signum = signum

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    stop.check()                     # a signal that came after the last check
