"""`EcadError`: the one base class of every error a user can fix.

Each module keeps its own error (ScheduleError, SpaceError, RunError, ...), and each derives from
this one, so the command line turns any of them into a single line and exit status 2, and a test
can assert "bad input raised the project's error, nothing else". The message always names the
file or option, the problem and the fix.
"""

from __future__ import annotations

import reprlib
from typing import Any


class EcadError(Exception):
    """Bad input (a file, an option, a run directory) that the user can fix; the message says how."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 6, 4, 3


def shown(value: Any) -> str:
    """A bad value as an error message quotes it: cut short in bounded time, never the whole of a
    huge string, number or table."""
    return _SHORT.repr(value)
