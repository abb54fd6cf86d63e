"""Ctrl-C that nothing in between can lose.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be. When
that is a weakref callback or a `__del__` (the garbage collector runs them at any allocation),
the exception is "ignored" and printed as a warning, and any library code that catches
`BaseException` swallows it too: the search then runs on to its last generation as if the user
had never pressed Ctrl-C. So while a search runs, SIGINT also sets a flag, and the search checks it
at points where stopping is safe (after each result, before each generation) and raises there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class InterruptFlag:
    """Whether Ctrl-C was pressed while installed; `check()` raises KeyboardInterrupt if so."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt  # stop at once where it can; check() stops it where it could not


@contextlib.contextmanager
def catch_interrupts() -> Iterator[InterruptFlag]:
    """Record SIGINT in the flag it yields while the block runs. Only Python's own Ctrl-C handler
    is replaced (in the main thread, the only one signals reach): a handler the caller installed,
    or SIGINT ignored, is theirs and stays, and the flag then stays unset."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield flag
        return
    signal.signal(signal.SIGINT, flag._on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
