"""`EcadError`: the one base class of every error a user can fix.

Each module keeps its own error (ScheduleError, SpaceError, RunError, ...), and each derives from
this one, so the command line turns any of them into a single line and exit status 2, and a test
can assert "bad input raised the project's error, nothing else". The message always names the
file or option, the problem and the fix.
"""

from __future__ import annotations


class EcadError(Exception):
    """Bad input (a file, an option, a run directory) that the user can fix; the message says how."""
