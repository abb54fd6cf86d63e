"""Forecast cells: format 2, the history plan, and the hooks against a hand-written Taylor reference."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

import ecad
from ecad.cache.hooks import installation_of, listen_for_branches
from ecad.cache.macs import dims_for_space, schedule_macs
from ecad.cache.plan import CachePlan, lifetimes
from ecad.models import adapter_for_pipeline
from ecad.models.pixart import pixart_layout
from ecad.schedule import Schedule, ScheduleError, load_schedule, repair_forecast
from ecad.spaces import load_space
from tests.conftest import run_space
from tests.conftest import tiny_family as tiny

STEPS = 8


def taylor_schedule(layout, steps: int = STEPS, n: int = 3, order: int = 1, **kw) -> Schedule:
    """Compute every n-th step (and step 1, so step 2 has two points), forecast in between."""
    grid = np.zeros((steps, layout.num_blocks, layout.num_components), dtype=bool)
    grid[::n] = True
    grid[1] = True
    forecast = ~grid
    return Schedule(layout, grid, forecast=repair_forecast(grid, forecast), forecast_order=order, **kw)


@contextlib.contextmanager
def hand_forecast(pipe, schedule: Schedule):
    """Forecasting written by hand, independent of ecad's hooks: every component keeps each output
    it computes with its step; a forecast cell is y1 + (y1 - y0) (t - t1) / (t1 - t0) from the last
    two (order 1), or Newton's quadratic through the last three (order 2); a reuse cell is y1."""
    adapter = adapter_for_pipeline(pipe)
    t = pipe.transformer
    listener = listen_for_branches(t, "reference.branch")
    now = {"step": 0, "branch": ""}
    counts: dict[str, int] = {}
    grid, forecast = schedule.executed_grid(), schedule.executed_forecast()
    position = schedule.executed_steps
    history: dict = {}
    saved = []
    orig_t = t.forward

    def t_forward(*a, **k):
        branch = listener.branch()
        now.update(step=counts.get(branch, 0), branch=branch)
        counts[branch] = now["step"] + 1
        return orig_t(*a, **k)

    def taylor(points, at):
        (t1, y1), (t0, y0) = points[-1], points[-2]
        d1 = (y1 - y0) / (t1 - t0)
        if schedule.forecast_order == 1 or len(points) < 3:
            return y1 + d1 * (at - t1)
        tm, ym = points[-3]
        d0 = (y0 - ym) / (t0 - tm)
        d2 = (d1 - d0) / (t1 - tm)
        return y1 + d1 * (at - t1) + d2 * (at - t1) * (at - t0)

    def on_tensors(points, at):
        if isinstance(points[-1][1], torch.Tensor):
            return taylor(points, at)
        return type(points[-1][1])(on_tensors([(p, y[i]) for p, y in points], at) for i in range(len(points[-1][1])))

    t.forward = t_forward
    saved.append((t, orig_t))
    for b, (group, i) in enumerate(schedule.layout.blocks()):
        mods = adapter.component_modules(getattr(t, group.name)[i], group)
        for c, name in enumerate(group.components):
            m, orig = mods[name], mods[name].forward

            def fwd(*a, _orig=orig, _b=b, _c=c, **k):
                s, points = now["step"], history.setdefault((_b, _c, now["branch"]), [])
                if grid[s, _b, _c]:
                    points.append((position[s], _orig(*a, **k)))
                    return points[-1][1]
                if forecast[s, _b, _c]:
                    return on_tensors(points, position[s])
                return points[-1][1]

            m.forward = fwd
            saved.append((m, orig))
    try:
        yield
    finally:
        for m, orig in saved:
            m.forward = orig
        t._diffusers_hook.remove_hook("reference.branch", recurse=False)


def run(pipe, space, steps: int | None = None, prompts=("a red circle", "two squares")):
    return run_space(pipe, space, prompts, steps)


# ----------------------------------------------------------------------- format
def test_version_1_files_load_and_resave_unchanged(tmp_path):
    s = Schedule.every_n(pixart_layout(2), 5, 2, height=256, width=256)
    path = s.save(tmp_path / "v1.json")
    text = path.read_text()
    assert json.loads(text)["format"] == "ecad-schedule/1"
    again = load_schedule(path)
    assert again.forecast is None and again.guidance_reuse is None
    assert again.save(tmp_path / "again.json").read_text() == text


def test_version_2_holds_one_symbol_per_cell_and_round_trips(tmp_path):
    s = taylor_schedule(pixart_layout(2), order=2, height=256, width=256)
    data = json.loads(s.save(tmp_path / "v2.json").read_text())
    assert data["format"] == "ecad-schedule/2" and data["forecast_order"] == 2
    assert data["grid"][:4] == ["CCC CCC", "CCC CCC", "FFF FFF", "CCC CCC"]
    assert data["grid"][4] == "FFF FFF"
    again = load_schedule(tmp_path / "v2.json")
    assert again == s and np.array_equal(again.forecast, s.forecast)
    assert again.save(tmp_path / "v2b.json").read_text() == (tmp_path / "v2.json").read_text()
    data["grid"][2] = "FXF FFF"
    with pytest.raises(ScheduleError, match=r"grid\[2\] block 0 .*C \(compute\), R \(reuse\) or F \(forecast\)"):
        load_schedule(data)


def test_ecad_export_refuses_forecast_unless_lossy(tmp_path):
    s = taylor_schedule(pixart_layout(2))
    with pytest.raises(ScheduleError, match=r"only compute and reuse.*forecast cell.*--lossy"):
        s.save(tmp_path / "e.json", format="ecad")
    s.save(tmp_path / "e.json", format="ecad", lossy=True)
    back = load_schedule(tmp_path / "e.json")
    assert back.forecast is None and np.array_equal(back.grid, s.grid)  # forecast became reuse


def test_a_forecast_without_two_computed_outputs_is_refused_and_repair_makes_it_reuse():
    layout = pixart_layout(2)
    grid = np.zeros((4, 2, 3), dtype=bool)
    grid[0] = True
    forecast = np.zeros_like(grid)
    forecast[1, 1, 2] = True
    with pytest.raises(ScheduleError, match=r"step 1 block 1 component 'ff' forecasts with fewer than 2"):
        Schedule(layout, grid, forecast=forecast)
    assert not repair_forecast(grid, forecast).any()
    both = grid.copy()
    with pytest.raises(ScheduleError, match="both compute and forecast"):
        Schedule(layout, grid, forecast=both)


# ----------------------------------------------------------------------- plan
def test_the_plan_keeps_exactly_the_history_each_forecast_reads():
    compute = np.array([1, 0, 1, 0, 0, 1, 0, 1, 1, 0], dtype=bool)[:, None, None]
    forecast = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)[:, None, None]
    until = lifetimes(compute, forecast, order=1)[:, 0, 0]
    # step 0 is read by the reuse at 1 and (older point) by the forecasts at 3, 4; step 2 by 3, 4;
    # step 5 by the reuse at 6 only; step 7 by the forecast at 9 (older), step 8 by it (latest)
    assert until.tolist() == [4, -1, 4, -1, -1, 6, -1, 9, 9, -1]
    assert lifetimes(compute, forecast, order=2)[:, 0, 0].tolist() == [4, -1, 4, -1, -1, 9, -1, 9, 9, -1]


def test_the_hooks_hold_only_what_later_steps_read(tiny_pixart):
    """In a user's own loop: after each step the cache holds exactly the outputs whose last read is
    still ahead (the plan's `until`), and nothing after the last forecast."""
    t = tiny_pixart.transformer
    layout = pixart_layout(4)
    s = taylor_schedule(layout, steps=7, n=3)
    ecad.apply_schedule(t, s)
    state = installation_of(t).state
    plan = CachePlan.from_schedule(s)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    kw = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}, "return_dict": False}
    with torch.no_grad():
        for step in range(7):
            t(x, encoder_hidden_states=text, timestep=torch.tensor([900 - 100 * step] * 2), **kw)
            held = {(k[0], k[1], p) for k, p in state.cache_step.items()}
            held |= {(k[0], k[1], p) for k, points in state.older.items() for p, _ in points}
            want = {
                (b, c, p) for p, b, c in zip(*np.nonzero((plan.until > step) & (np.arange(7) <= step)[:, None, None]))
            }
            assert held == want, step
    assert not state.cache and not state.older
    ecad.remove_schedule(t)


# ----------------------------------------------------------------------- hooks vs the reference
@pytest.mark.parametrize(
    "family, order",
    [
        ("pixart", 1),
        ("pixart", 2),
        pytest.param("flux", 1, marks=pytest.mark.slow),  # tuple outputs (joint attention)
        pytest.param("sd3", 1, marks=pytest.mark.slow),  # ragged layout
    ],
)
def test_forecast_cells_equal_a_hand_written_taylor_reference(family, order):
    space, pipe = tiny(family)
    schedule = taylor_schedule(space.layout, order=order)
    with hand_forecast(pipe, schedule):
        want = run(pipe, space, steps=STEPS)
    ecad.apply_schedule(pipe, schedule, exact=True)
    got = run(pipe, space)
    ecad.apply_schedule(pipe, schedule.without_forecast(), exact=True)
    reuse = run(pipe, space)
    ecad.remove_schedule(pipe)
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert (reuse - want).abs().max() > 100 * (got - want).abs().max()  # the comparison is not vacuous


def test_forecast_macs_are_reuse_plus_elementwise_work_reported_apart():
    space = load_space("tiny-pixart")
    dims = dims_for_space(space)
    s = taylor_schedule(space.layout)
    forecast = schedule_macs(s, dims, space.height, space.width, batch=2)
    reuse = schedule_macs(s.without_forecast(), dims, space.height, space.width, batch=2)
    assert forecast.total == reuse.total and reuse.forecast == 0
    cells = int(s.executed_forecast().sum())
    tokens = space.adapter.tokens(dims, space.height, space.width).image
    assert forecast.forecast_cells == cells
    assert forecast.forecast == pytest.approx(cells * 2 * 2 * tokens * dims.hidden)  # 2 points, 2 rows
