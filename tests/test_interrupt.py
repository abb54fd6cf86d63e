"""Ctrl-C during a search stops it even where the KeyboardInterrupt it raises is swallowed."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from ecad.search.interrupt import catch_interrupts


def _ctrl_c_swallowed() -> None:
    """A SIGINT whose KeyboardInterrupt is caught by code in between, as a weakref callback or a
    library's `except BaseException` does."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        pass


def test_a_swallowed_ctrl_c_is_raised_at_the_next_check():
    with catch_interrupts() as flag:
        flag.check()  # nothing pressed yet
        _ctrl_c_swallowed()
        with pytest.raises(KeyboardInterrupt):
            flag.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back


def test_a_handler_the_caller_installed_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *_: seen.append("caller's"))
    try:
        with catch_interrupts() as flag:
            os.kill(os.getpid(), signal.SIGINT)
            flag.check()  # the caller's handler took it: nothing to raise
        assert seen == ["caller's"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_nothing_is_installed():
    installed = []

    def run():
        with catch_interrupts() as flag:
            installed.append(signal.getsignal(signal.SIGINT))
            flag.check()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert installed == [signal.default_int_handler]
