"""ecad.cache.summary.summary: what the last call of a scheduled pipeline did, measured by the hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecad
from ecad.cache.macs import schedule_macs
from ecad.cache.plan import CachePlan
from ecad.cache.summary import summary
from ecad.models import adapter_for_pipeline
from ecad.models.base import TransformerDims
from ecad.schedule import Schedule, ScheduleError
from tests.conftest import generate

STEPS = 6
TEXT = 16  # max_sequence_length of the tiny calls (tests.conftest)
SIZE = 16  # height and width of the tiny calls


def _layout(pipe):
    return adapter_for_pipeline(pipe).layout_of(pipe.transformer)


def _nbytes(out) -> int:
    if torch.is_tensor(out):
        return out.numel() * out.element_size()
    return sum(_nbytes(x) for x in out) if isinstance(out, (tuple, list)) else 0


def _output_bytes(pipe) -> tuple[dict, list]:
    """Bytes of each component's output when it first runs, by (block, component), via torch's own
    forward hooks (they see what the component module returned)."""
    adapter, seen, handles = adapter_for_pipeline(pipe), {}, []
    for b, (group, i) in enumerate(_layout(pipe).blocks()):
        modules = adapter.component_modules(getattr(pipe.transformer, group.name)[i], group)
        for c, name in enumerate(group.components):

            def record(module, args, out, _key=(b, c)):
                seen.setdefault(_key, _nbytes(out))

            handles.append(modules[name].register_forward_hook(record))
    return seen, handles


def _expected_macs(pipe, schedule, rows: int, text_kv_cache: bool = True):
    dims = TransformerDims.from_transformer(pipe.transformer, pipe.vae_scale_factor, TEXT)
    return schedule_macs(schedule, dims, SIZE, SIZE, batch=rows, text_len=TEXT, text_kv_cache=text_kv_cache)


def _check(pipe, schedule, s, rows: int, branches: int, text_kv_cache: bool = True) -> None:
    """The measured counts agree with what the schedule asks, call by call."""
    layout, plan_steps = schedule.layout, len(schedule.executed_steps)
    cells = int(layout.cell_mask().sum())
    assert s.schedule_name == schedule.name and s.num_steps == schedule.num_steps
    assert len(s.branches) == branches and s.executed_steps == plan_steps and s.rows == rows
    assert s.computed + s.cache_hits == plan_steps * cells * branches
    assert s.component_fraction == pytest.approx(schedule.compute_fraction())
    grid = schedule.executed_grid() & layout.cell_mask()[None]
    for i, step in enumerate(s.steps):
        assert step.step == schedule.executed_steps[i % plan_steps]
        assert step.computed == int(grid[i % plan_steps].sum()) and step.computed + step.reused == cells
    report = _expected_macs(pipe, schedule, rows, text_kv_cache)
    assert s.macs == pytest.approx(branches * report.total, rel=1e-12)
    assert s.full_macs == pytest.approx(branches * report.full, rel=1e-12)
    assert s.macs_fraction == pytest.approx(report.total / report.full, rel=1e-12)
    assert s.speedup_bound == pytest.approx(report.speedup_bound, rel=1e-12)
    assert s.seconds > 0 and s.timed == "pipeline call"


@pytest.mark.parametrize("fixture, rows", [("tiny_pixart", 2), ("tiny_flux", 1)])  # PixArt: CFG as a doubled batch
def test_every_2_is_measured_as_the_schedule_says(fixture, rows, request):
    pipe = request.getfixturevalue(fixture)
    schedule = Schedule.every_n(_layout(pipe), STEPS, 2)
    ecad.apply_schedule(pipe, schedule)
    sizes, handles = _output_bytes(pipe)
    generate(pipe)
    for h in handles:
        h.remove()
    s = summary(pipe)
    _check(pipe, schedule, s, rows, branches=1)
    assert s.component_fraction == 0.5 and s.cache_hits == s.computed > 0
    # later computing steps reuse the call's text K/V (PixArt's cross-attention): a little under 100%
    report = _expected_macs(pipe, schedule, rows)
    later = 1.0 - report.text_kv / (report.full / STEPS - report.fixed / len(report.steps))
    assert [step.block_macs_fraction for step in s.steps] == pytest.approx([1.0, 0.0] + [later, 0.0] * (STEPS // 2 - 1))
    # every output of step 0 is kept for step 1 and none is dropped before step 1: the peak is one step's outputs
    assert len(sizes) == int(schedule.layout.cell_mask().sum())
    assert s.peak_cached_bytes == sum(sizes.values()) > 0
    text = str(s)
    assert "every_2" in text and "50.0%" in text and f"{s.macs_fraction:.1%}" in text and "measured" in text


def test_folded_runs_of_reused_steps_are_counted_as_cache_hits(tiny_pixart):
    """PixArt's fast path folds a run of fully reused steps into one op per step: no component hook runs."""
    schedule = Schedule.every_n(_layout(tiny_pixart), STEPS, 3)
    ecad.apply_schedule(tiny_pixart, schedule)
    assert tiny_pixart._ecad_handle.state.fold.any()
    sizes, handles = _output_bytes(tiny_pixart)
    generate(tiny_pixart)
    for h in handles:
        h.remove()
    s = summary(tiny_pixart)
    _check(tiny_pixart, schedule, s, rows=2, branches=1)
    assert s.cache_hits == 2 * s.computed and s.peak_cached_bytes == sum(sizes.values())


@pytest.mark.parametrize("fixture, rows", [("tiny_pixart", 2), ("tiny_flux", 1)])
def test_no_caching_computes_everything_and_caches_nothing(fixture, rows, request):
    pipe = request.getfixturevalue(fixture)
    schedule = Schedule.full(_layout(pipe), STEPS, name="full")
    ecad.apply_schedule(pipe, schedule, text_kv_cache=False)  # the stock pipeline's work exactly
    generate(pipe)
    s = summary(pipe)
    _check(pipe, schedule, s, rows, branches=1, text_kv_cache=False)
    assert s.cache_hits == 0 and s.peak_cached_bytes == 0
    assert s.macs_fraction == 1.0 and s.speedup_bound == 1.0 and "100.0%" in str(s)
    ecad.apply_schedule(pipe, schedule)  # the text K/V cache (on by default) computes cross-attention's K/V once
    generate(pipe)
    s = summary(pipe)
    _check(pipe, schedule, s, rows, branches=1)
    assert s.cache_hits == 0 and (s.macs_fraction < 1.0) == (fixture == "tiny_pixart")


@pytest.mark.parametrize("fixture, rows", [("tiny_pixart", 2), ("tiny_flux", 1)])
def test_mixed_schedules_are_counted_once_and_their_peak_follows_the_plan(fixture, rows, request, monkeypatch):
    """A random grid (partly reused blocks, folded runs): the first call of each block path also runs
    the stock block beside it (emptied verdicts force that here), which must not count twice."""
    from ecad.cache import check

    monkeypatch.setattr(check, "VERDICTS", {})
    pipe = request.getfixturevalue(fixture)
    layout = _layout(pipe)
    grid = np.random.default_rng(3).random((STEPS, layout.num_blocks, layout.num_components)) < 0.4
    schedule = Schedule(layout, grid, name="random")
    ecad.apply_schedule(pipe, schedule)
    sizes, handles = _output_bytes(pipe)
    generate(pipe)
    for h in handles:
        h.remove()
    s = summary(pipe)
    _check(pipe, schedule, s, rows, branches=1)
    plan, state = CachePlan.from_schedule(schedule), pipe._ecad_handle.state
    order = list(sizes)  # (block, component) in the order they first ran: the blocks' call order
    live = peak = 0
    for step in range(STEPS):
        for b in range(layout.num_blocks):
            cells = [c for bb, c in order if bb == b]
            if state.block_path[step, b]:  # a block path takes its reused outputs before computing
                cells = [c for c in cells if plan.drop[step, b, c]] + [c for c in cells if plan.keep[step, b, c]]
            for c in cells:  # else each component takes (and drops) or computes (and keeps) in turn
                live += sizes[b, c] * (int(plan.keep[step, b, c]) - int(plan.drop[step, b, c]))
                peak = max(peak, live)
    assert s.peak_cached_bytes == peak > 0 and live == 0


def test_each_guidance_branch_is_counted_and_cached_on_its_own(tiny_flux):
    """FLUX's true CFG: two transformer calls per step (cache contexts 'cond', 'uncond'), two caches."""
    schedule = Schedule.every_n(_layout(tiny_flux), STEPS, 2)
    ecad.apply_schedule(tiny_flux, schedule)
    sizes, handles = _output_bytes(tiny_flux)
    generate(tiny_flux, true_cfg_scale=2.0, negative_prompt="blurry")
    for h in handles:
        h.remove()
    s = summary(tiny_flux)
    assert s.branches == ("cond", "uncond")
    _check(tiny_flux, schedule, s, rows=1, branches=2)
    assert s.peak_cached_bytes == 2 * sum(sizes.values())  # both branches hold step 0's outputs at once
    assert "branch" in str(s)


def test_a_timestep_subset_counts_against_the_base_grid(tiny_flux):
    schedule = Schedule.every_n(_layout(tiny_flux), 8, 2, timesteps=[0, 1, 3, 6])
    ecad.apply_schedule(tiny_flux, schedule)
    generate(tiny_flux)
    s = summary(tiny_flux)
    _check(tiny_flux, schedule, s, rows=1, branches=1)
    assert [step.step for step in s.steps] == [0, 1, 3, 6] and s.macs_fraction < 0.5


def test_the_summary_describes_the_last_call(tiny_pixart):
    layout = _layout(tiny_pixart)
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(layout, STEPS, 2))
    generate(tiny_pixart)
    first = summary(tiny_pixart)
    full = Schedule.full(layout, STEPS, name="full")
    ecad.apply_schedule(tiny_pixart, full)  # swapped in place
    generate(tiny_pixart)
    s = summary(tiny_pixart)
    assert first.cache_hits > 0 and s.cache_hits == 0 and s.schedule_name == "full"
    _check(tiny_pixart, full, s, rows=2, branches=1)


def test_a_transformer_scheduled_directly_is_summarised_too(tiny_pixart):
    schedule = Schedule.every_n(_layout(tiny_pixart), STEPS, 3)
    t = tiny_pixart.transformer
    ecad.apply_schedule(t, schedule)
    with pytest.raises(ScheduleError, match="call the pipeline first"):
        summary(t)
    generate(tiny_pixart, num_inference_steps=STEPS)
    s = summary(t)
    assert summary(tiny_pixart).computed == s.computed  # the pipeline's transformer holds the schedule
    assert s.timed.startswith("transformer calls") and s.seconds > 0
    assert s.component_fraction == pytest.approx(schedule.compute_fraction())
    assert s.macs == pytest.approx(_expected_macs(tiny_pixart, schedule, rows=2).total, rel=1e-12)
    ecad.reset_schedule(t)  # the next generation starts a new record
    generate(tiny_pixart, num_inference_steps=STEPS)
    assert summary(t).computed == s.computed and summary(t).executed_steps == STEPS


def test_it_says_what_is_missing(tiny_pixart):
    with pytest.raises(ScheduleError, match="no ecad schedule is applied.*apply_schedule"):
        summary(tiny_pixart)
    with pytest.raises(ScheduleError, match="no ecad schedule is applied"):
        summary(tiny_pixart.transformer)
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(_layout(tiny_pixart), STEPS, 2))
    with pytest.raises(ScheduleError, match="call the pipeline first"):
        summary(tiny_pixart)
    generate(tiny_pixart)
    summary(tiny_pixart)
    ecad.remove_schedule(tiny_pixart)
    with pytest.raises(ScheduleError, match="no ecad schedule is applied"):
        summary(tiny_pixart)
