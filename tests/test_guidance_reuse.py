"""Guidance-branch reuse (ecad.cache.guidance) against a hand-written FasterCache-style reference."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

import ecad
from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
from ecad.cache.realised import ComputeCounter
from ecad.schedule import Schedule, ScheduleError, load_schedule
from ecad.spaces import load_space
from tests.conftest import run_space
from tests.conftest import tiny_family as tiny

STEPS = 6
SKIP = np.array([False, True, True, False, True, True])


def run(pipe, space, steps: int | None = None, prompts=("a red circle", "two squares")):
    return run_space(pipe, space, prompts, steps)


@contextlib.contextmanager
def hand_guidance_reuse(pipe, skip):
    """By hand: on a flagged step call the stock transformer with the second (conditional) half of
    every batched input, and return [cond + (uncond - cond)_last; cond]; other steps run whole and
    remember (uncond - cond)."""
    t = pipe.transformer
    stock = t.forward
    state = {"step": 0, "delta": None}

    def half(v, rows):
        if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows:
            return v[rows // 2 :]
        if isinstance(v, dict):
            return {k: half(x, rows) for k, x in v.items()}
        return v

    def forward(hidden_states, *args, **kwargs):
        step, rows = state["step"], hidden_states.shape[0]
        state["step"] += 1
        if not skip[step]:
            out = stock(hidden_states, *args, **kwargs)
            uncond, cond = out[0].chunk(2)
            state["delta"] = uncond - cond
            return out
        out = stock(half(hidden_states, rows), *args, **{k: half(v, rows) for k, v in kwargs.items()})
        cond = out[0]
        return (torch.cat([cond + state["delta"], cond]), *out[1:])

    t.forward = forward
    try:
        yield
    finally:
        del t.forward


@pytest.mark.parametrize("family", ["pixart", pytest.param("sana", marks=pytest.mark.slow), "sd3"])
def test_guidance_reuse_equals_a_hand_written_reference(family):
    space, pipe = tiny(family)
    with hand_guidance_reuse(pipe, SKIP):
        want = run(pipe, space, steps=STEPS)
    stock = run(pipe, space, steps=STEPS)
    schedule = Schedule.full(space.layout, STEPS, guidance_reuse=SKIP, guidance_scale=space.guidance_scale)
    ecad.apply_schedule(pipe, schedule, exact=True)
    got = run(pipe, space)
    ecad.remove_schedule(pipe)
    assert torch.equal(got, want)
    assert not torch.equal(got, stock)


def test_guidance_reuse_with_caching_halves_the_counted_rows_and_the_macs_agree():
    space, pipe = tiny("pixart")
    grid = np.ones((STEPS, space.layout.num_blocks, space.layout.num_components), dtype=bool)
    grid[2::2, :, 0] = False  # attn1 reused on steps 2 and 4 (one skips guidance: reads cond rows of its cache)
    schedule = Schedule(space.layout, grid, guidance_reuse=SKIP, guidance_scale=space.guidance_scale)
    with ComputeCounter(pipe.transformer, space) as counter:
        ecad.apply_schedule(pipe, schedule)
        run(pipe, space)  # the first real call checks the block paths beside the stock forward (extra forwards)
        counter.take()
        images = run(pipe, space)
        summary = ecad.summary(pipe)
        ecad.remove_schedule(pipe)
        realised = counter.take()
    assert torch.isfinite(images).all()
    rows = transformer_batch("pixart", 2, space.guidance_scale)
    want = schedule_macs(schedule, space_dims := dims_for_space(space), space.height, space.width, batch=rows)
    assert realised.transformer_rows == rows * (STEPS - SKIP.sum()) + rows // 2 * SKIP.sum()
    assert realised.macs(space) == pytest.approx(want.total, rel=1e-12)
    assert summary.macs == pytest.approx(want.total, rel=1e-12)
    full = schedule_macs(Schedule.full(space.layout, STEPS), space_dims, space.height, space.width, batch=rows)
    assert summary.full_macs == pytest.approx(full.full, rel=1e-12)
    assert summary.rows == rows and [s.step for s in summary.steps] == list(range(STEPS))


def test_guidance_reuse_is_format_2_and_refused_where_it_cannot_run(tmp_path):
    space = load_space("tiny-pixart")
    s = Schedule.full(space.layout, STEPS, guidance_reuse=SKIP)
    data = json.loads(s.save(tmp_path / "g.json").read_text())
    assert data["format"] == "ecad-schedule/2" and data["guidance_reuse"] == "011011"
    assert load_schedule(tmp_path / "g.json") == s
    with pytest.raises(ScheduleError, match="guidance reuse on 4 step"):
        s.save(tmp_path / "e.json", format="ecad")
    first = SKIP.copy()
    first[0] = True
    with pytest.raises(ScheduleError, match="first step that runs .* must run both branches"):
        Schedule.full(space.layout, STEPS, guidance_reuse=first)
    for family in ("flux", "wan"):
        layout = load_space(f"tiny-{family}").layout
        with pytest.raises(ScheduleError, match="does not run classifier-free guidance as one doubled batch"):
            Schedule.full(layout, STEPS, guidance_reuse=SKIP)
