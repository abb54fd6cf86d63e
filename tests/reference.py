"""Reference semantics of caching, written by hand and independent of ecad's hooks: what every
family's schedules are checked against."""

from __future__ import annotations

import contextlib

from ecad.models import adapter_for_pipeline
from ecad.schedule import Schedule


@contextlib.contextmanager
def hand_cached(pipe, schedule: Schedule, calls_per_step: int = 1):
    """Reference semantics written by hand, independent of ecad's hooks: wrap each component's
    forward, keep every output it computes, return the last one when the grid says reuse."""
    adapter = adapter_for_pipeline(pipe)
    t = pipe.transformer
    calls = {"n": 0}
    grid = schedule.executed_grid()  # rows of the steps that run, in order
    store: dict = {}
    saved = []
    orig_t = t.forward

    def t_forward(*a, **k):
        calls["n"] += 1
        return orig_t(*a, **k)

    t.forward = t_forward
    saved.append((t, orig_t))
    for b, (group, i) in enumerate(schedule.layout.blocks()):
        mods = adapter.component_modules(getattr(t, group.name)[i], group)
        for c, name in enumerate(group.components):
            m = mods[name]
            orig = m.forward

            def fwd(*a, _m=m, _orig=orig, _b=b, _c=c, **k):
                step, branch = divmod(calls["n"] - 1, calls_per_step)
                if grid[step, _b, _c]:
                    store[(_b, _c, branch)] = _orig(*a, **k)
                return store[(_b, _c, branch)]

            m.forward = fwd
            saved.append((m, orig))
    try:
        yield
    finally:
        for m, orig in saved:
            m.forward = orig
