"""Graceful stop: SIGTERM/SIGINT set a flag that a training loop checks at each step boundary."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Set by a signal handler; read by the loop. ``signum`` is 0 until a signal arrives."""

    def __init__(self) -> None:
        self.signum = 0

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the first SIGTERM/SIGINT only sets the flag; handlers are restored after.

    A second signal while a stop is pending raises KeyboardInterrupt, so a user who presses
    Ctrl-C twice is never stuck behind a slow step. Outside the main thread signals cannot be
    handled by Python, so the flag then never sets.
    """
    req = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield req
        return

    def handler(signum: int, frame: object) -> None:
        if req.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name} while stopping")
        req.signum = signum

    # A signal the parent chose to ignore (nohup, a background job's SIGINT) stays ignored.
    previous = {s: h for s in signals if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    for s in signals:
        signal.signal(s, handler)
    try:
        yield req
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Stopped(BaseException):
    """Raised by :func:`raise_on_signals`. A BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` swallows it, while every ``with`` and ``finally`` on the way up cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def raise_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT raise :class:`Stopped` where the code is.

    For work with no step boundary to stop at (fine-tuning writes its outputs atomically, so an
    interrupted run leaves nothing half-written); SIGTERM's default would end the process at once,
    skipping that cleanup. Handlers are restored after; signals the parent ignored stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {s: h for s in signals if (h := signal.getsignal(s)) is not signal.SIG_IGN}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
