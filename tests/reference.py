"""Reference semantics of caching, written by hand and independent of ecad's hooks: what every
family's schedules are checked against."""

from __future__ import annotations

import contextlib

from ecad.cache.hooks import listen_for_branches
from ecad.models import adapter_for_pipeline
from ecad.schedule import Schedule


@contextlib.contextmanager
def hand_cached(pipe, schedule: Schedule):
    """Reference semantics written by hand, independent of ecad's hooks: wrap each component's
    forward, keep every output it computes, return the last one when the grid says reuse. Steps
    are counted per guidance branch, the branch being the caller's diffusers cache context."""
    adapter = adapter_for_pipeline(pipe)
    t = pipe.transformer
    listener = listen_for_branches(t, "reference.branch")  # receives cache_context(name), nothing else
    steps: dict[str, int] = {}
    now = {"step": 0, "branch": ""}
    grid = schedule.executed_grid()  # rows of the steps that run, in order
    store: dict = {}
    saved = []
    orig_t = t.forward

    def t_forward(*a, **k):
        branch = listener.branch()
        now.update(step=steps.get(branch, 0), branch=branch)
        steps[branch] = now["step"] + 1
        return orig_t(*a, **k)

    t.forward = t_forward
    saved.append((t, orig_t))
    for b, (group, i) in enumerate(schedule.layout.blocks()):
        mods = adapter.component_modules(getattr(t, group.name)[i], group)
        for c, name in enumerate(group.components):
            m = mods[name]
            orig = m.forward

            def fwd(*a, _orig=orig, _b=b, _c=c, **k):
                key = (_b, _c, now["branch"])
                if grid[now["step"], _b, _c]:
                    store[key] = _orig(*a, **k)
                return store[key]

            m.forward = fwd
            saved.append((m, orig))
    try:
        yield
    finally:
        for m, orig in saved:
            m.forward = orig
        t._diffusers_hook.remove_hook("reference.branch", recurse=False)
