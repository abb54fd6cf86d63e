"""The text K/V cache (ecad.cache.text_kv): lossless, once per call and branch, counted as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecad
from ecad.cache.macs import dims_for_space, schedule_macs, text_kv_macs, transformer_batch
from ecad.cache.realised import ComputeCounter
from ecad.cache.text_kv import apply_text_kv_cache, text_projection_modules
from ecad.schedule import Schedule
from ecad.spaces import load_space
from tests.conftest import run_space
from tests.conftest import tiny_family as tiny

STEPS = 5
CROSS = ("pixart", "sana", "wan")  # families with cross-attention


def run(pipe, space, prompts=("a red circle", "two blue squares"), seed: int = 0, steps: int | None = None):
    return run_space(pipe, space, prompts, steps, seed)


class ProjectionRuns:
    """Counts the text projections' own forwards: each module's `forward` is wrapped before any
    hook is applied, so the hooks keep the counting forward as the one they call only when the
    projection really runs (a torch forward hook would fire on every `__call__`, hits included)."""

    def __init__(self, pipe, space):
        self.n = 0
        self.modules = [m for _, _, m in text_projection_modules(space.adapter, pipe.transformer)]
        for m in self.modules:
            m.forward = self._counting(m.forward)
        self.per_call = len(self.modules)

    def _counting(self, forward):
        def counted(*args, **kwargs):
            self.n += 1
            return forward(*args, **kwargs)

        return counted

    def close(self):
        for m in self.modules:
            del m.forward


@pytest.mark.parametrize("family", ["pixart", "sana", pytest.param("wan", marks=pytest.mark.slow)])
def test_text_kv_cache_is_bit_identical_and_runs_projections_once_per_branch(family):
    space, pipe = tiny(family)
    stock = run(pipe, space, steps=STEPS)
    branches = 2 if family == "wan" else 1  # Wan runs each CFG branch as its own call
    runs = ProjectionRuns(pipe, space)
    assert runs.per_call > 0
    run(pipe, space, steps=STEPS)
    assert runs.n == runs.per_call * branches * STEPS  # stock: at every step
    runs.n = 0
    ecad.apply_schedule(pipe, Schedule.full(space.layout, STEPS))
    assert torch.equal(run(pipe, space), stock)
    assert runs.n == runs.per_call * branches  # once per call and branch, not per step
    every = Schedule.every_n(space.layout, STEPS, 2)
    ecad.apply_schedule(pipe, every, text_kv_cache=False)
    runs.n = 0
    off = run(pipe, space)
    assert runs.n == runs.per_call * branches * 3  # steps 0, 2, 4 compute attn2
    ecad.apply_schedule(pipe, every)
    runs.n = 0
    assert torch.equal(run(pipe, space), off)
    assert runs.n == runs.per_call * branches
    ecad.remove_schedule(pipe)
    runs.close()


def test_text_kv_cache_follows_new_text(tiny_pixart):
    """A new call (other prompts) recomputes; the same transformer in a user's own loop recomputes
    when it is passed other text, and keeps the K/V while the text tensor is the same."""
    space = load_space("tiny-pixart")
    pipe = tiny_pixart
    pipe.set_progress_bar_config(disable=True)
    stock_b = run(pipe, space, prompts=("a green triangle", "sunset"), steps=STEPS)
    ecad.apply_schedule(pipe, Schedule.every_n(space.layout, STEPS, 2))
    first = run(pipe, space)
    second = run(pipe, space, prompts=("a green triangle", "sunset"))
    ecad.apply_schedule(pipe, Schedule.every_n(space.layout, STEPS, 2), text_kv_cache=False)
    assert torch.equal(run(pipe, space), first)
    assert torch.equal(run(pipe, space, prompts=("a green triangle", "sunset")), second)
    ecad.remove_schedule(pipe)
    assert not torch.equal(stock_b, second)  # every-2 is lossy: the comparison above is not vacuous

    t = pipe.transformer
    cache = apply_text_kv_cache(t)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text_a, text_b = torch.randn(2, 16, 32, generator=g), torch.randn(2, 16, 32, generator=g)
    timestep = torch.tensor([500, 500])
    kw = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}, "return_dict": False}
    with torch.no_grad():
        a1 = t(x, encoder_hidden_states=text_a, timestep=timestep, **kw)[0]
        b1 = t(x, encoder_hidden_states=text_b, timestep=timestep, **kw)[0]
        text_b.mul_(1.0)  # in place: the version changes, the K/V are recomputed (same values)
        b2 = t(x, encoder_hidden_states=text_b, timestep=timestep, **kw)[0]
        cache.remove()
        a_ref = t(x, encoder_hidden_states=text_a, timestep=timestep, **kw)[0]
        b_ref = t(x, encoder_hidden_states=text_b, timestep=timestep, **kw)[0]
    assert torch.equal(a1, a_ref) and torch.equal(b1, b_ref) and torch.equal(b2, b_ref)
    assert not torch.equal(a1, b1)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_joint_attention_families_have_no_text_projections(family):
    space, pipe = tiny(family)
    assert text_projection_modules(space.adapter, pipe.transformer) == []
    assert apply_text_kv_cache(pipe.transformer) is None
    dims = dims_for_space(space)
    assert not text_kv_macs(dims, space.height, space.width).any()


@pytest.mark.parametrize("family", CROSS)
def test_macs_count_text_kv_once_per_call_and_the_counter_agrees(family):
    space, pipe = tiny(family)
    dims = dims_for_space(space)
    schedule = Schedule.every_n(space.layout, STEPS, 2)
    rows = transformer_batch(family, 2, space.guidance_scale)
    on = schedule_macs(schedule, dims, space.height, space.width, batch=rows)
    off = schedule_macs(schedule, dims, space.height, space.width, batch=rows, text_kv_cache=False)
    kv = float(text_kv_macs(dims, space.height, space.width, batch=rows).sum())
    assert kv > 0 and on.text_kv == kv and on.full == off.full
    assert off.total - on.total == pytest.approx(2 * kv)  # 3 computing steps -> 1
    assert on.per_step[0] == pytest.approx(off.per_step[0])
    for kv_on, want in ((True, on), (False, off)):
        with ComputeCounter(pipe.transformer, space) as counter:
            ecad.apply_schedule(pipe, schedule, text_kv_cache=kv_on)
            run(pipe, space)
            summary = ecad.summary(pipe)
            ecad.remove_schedule(pipe)
            realised = counter.take()
        assert realised.macs(space) == pytest.approx(want.total, rel=1e-12)
        assert summary.macs == pytest.approx(want.total, rel=1e-12)  # each branch priced at its own rows
    assert np.all(realised.text_rows <= realised.component_rows)


@pytest.mark.parametrize("text_kv_cache", [True, False])
def test_search_workers_follow_the_runs_text_kv_setting(text_kv_cache):
    """A worker renders candidates with the run's --text-kv-cache: lossless either way, but a
    `--cost latency` run measures the setting its config names."""
    from ecad.distributed.worker import CandidateEvaluator, WorkerConfig

    config = WorkerConfig("tiny-pixart", ("a red circle",), (0,), batch_size=1, text_kv_cache=text_kv_cache)
    worker = CandidateEvaluator(config)
    space = worker.space
    worker.renderer.remove()  # the references' schedule: counting must wrap the stock forwards
    runs = ProjectionRuns(worker.renderer.pipe, space)
    worker.renderer.apply(Schedule.every_n(space.layout, space.steps, 2))
    worker.renderer.render(worker.items, 1)
    computed_steps = len(range(0, space.steps, 2))
    assert runs.n == runs.per_call * (1 if text_kv_cache else computed_steps)
    runs.close()
