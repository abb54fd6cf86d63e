"""Named schedules: built-in heuristics made for any model and step count, and searched ones
shipped with ecad, applied by name to a stock pipeline or used by `ecad generate`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecad
from ecad.catalog import (
    EXAMPLES,
    builtin_schedule,
    delta_dit_grid,
    resolve,
    role_mask,
    shipped_names,
    shipped_schedule,
)
from ecad.cli import main
from ecad.models import FAMILIES
from ecad.schedule import Schedule, ScheduleError
from ecad.spaces import load_space
from tests.conftest import generate


@pytest.mark.parametrize("family", FAMILIES)
def test_every_builtin_is_made_for_each_familys_layout_and_steps(family):
    space = load_space(f"tiny-{family}")
    for name in (*EXAMPLES, "every-5", "attention-every-3"):
        s = builtin_schedule(name, space.layout, space.steps)
        assert s.layout == space.layout and s.num_steps == space.steps and s.name == name
        assert s.grid[0].all()  # the first step computes: nothing is cached yet
    assert builtin_schedule("every-3", space.layout, 10) == Schedule.every_n(space.layout, 10, 3, name="every-3")
    attn = role_mask(space.layout, ("attention", "cross_attention"))
    g = builtin_schedule("attention-only", space.layout, space.steps).grid
    assert not g[1][attn & space.layout.cell_mask()].any() and g[1][~attn].all()  # attention reused, MLPs computed


def test_delta_dit_reuses_the_rear_blocks_early_and_the_front_blocks_late():
    layout = load_space("tiny-pixart").layout  # 4 blocks
    g = delta_dit_grid(layout, 8)
    assert g[::2].all()  # every other step computes everything
    assert g[1, :2].all() and not g[1, 2:].any()  # early: front computed, rear reused
    assert not g[5, :2].any() and g[5, 2:].all()  # late: front reused, rear computed


def test_bad_names_say_which_exist():
    layout = load_space("tiny-pixart").layout
    with pytest.raises(ScheduleError, match="not a named schedule; built-ins are no-caching, every-N"):
        builtin_schedule("every-other", layout, 8)
    with pytest.raises(ScheduleError, match="N must be between 2 and 7"):
        builtin_schedule("every-8", layout, 8)
    with pytest.raises(ScheduleError, match="no shipped schedule 'pixart-alpha-256:nope'; shipped ones are"):
        shipped_schedule("pixart-alpha-256:nope")


def test_a_builtin_applied_by_name_follows_each_calls_step_count(tiny_pixart):
    """`apply_schedule(pipe, "every-2")` needs no search and no step count: it is made for the
    pipeline's layout and re-made for every call's steps, the same as applying the Schedule."""
    layout = load_space("tiny-pixart").layout
    ecad.apply_schedule(tiny_pixart, "every-2")
    by_name = {n: generate(tiny_pixart, num_inference_steps=n) for n in (4, 6)}
    assert ecad.current_schedule(tiny_pixart).num_steps == 6
    for n, images in by_name.items():
        ecad.apply_schedule(tiny_pixart, builtin_schedule("every-2", layout, n))
        assert torch_equal(generate(tiny_pixart, num_inference_steps=n), images)
    ecad.remove_schedule(tiny_pixart)
    uncached = generate(tiny_pixart, num_inference_steps=6)
    assert not torch_equal(uncached, by_name[6])  # it did cache
    with pytest.raises(ScheduleError, match="does not say how many steps"):
        ecad.apply_schedule(tiny_pixart.transformer, "every-2")


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_a_shipped_searched_schedule_resolves_by_name_with_its_provenance(tiny_pixart):
    assert "tiny-pixart:demo" in shipped_names()
    s = resolve("tiny-pixart:demo")
    assert s.family == "pixart" and 0 < s.compute_fraction() < 1
    assert s.metrics["metric"] == "fidelity" and "config" in s.attributes["run"] and s.attributes["measured_on"]
    ecad.apply_schedule(tiny_pixart, "tiny-pixart:demo")
    assert ecad.current_schedule(tiny_pixart) == s
    images = generate(tiny_pixart, num_inference_steps=s.num_steps)
    assert np.isfinite(images.numpy()).all()


def test_generate_and_schedules_take_names(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate", "--schedule", "every-2", "--space", "tiny-pixart", "--prompt", "a cat", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "of the stock pipeline's transformer MACs (estimated; 50.0% of components)" in printed
        and (out / "generate.json").exists()
    )
    assert main(["generate", "--schedule", "every-2", "--prompt", "a cat", "--out", str(out)]) == 2
    assert "pass --space" in capsys.readouterr().err
    assert main(["schedules", "--space", "tiny-pixart"]) == 0
    listing = capsys.readouterr().out
    assert "every-3" in listing and "delta-dit" in listing and "tiny-pixart:demo" in listing


def test_taylorseer_and_fastercache_builtins(tiny_pixart):
    layout = load_space("tiny-pixart").layout
    s = builtin_schedule("taylorseer-3", layout, 8)
    assert s.grid[[0, 1, 3, 6]].all() and not s.grid[[2, 4, 5, 7]].any()
    assert s.forecast[[2, 4, 5, 7]].all() and s.forecast_order == 1
    assert builtin_schedule("taylorseer2-3", layout, 8).forecast_order == 2
    f = builtin_schedule("fastercache", layout, 20)
    assert f.grid.all() and f.guidance_reuse.tolist() == [s >= 7 and s % 5 != 0 for s in range(20)]
    with pytest.raises(ScheduleError, match="does not run classifier-free guidance as one doubled batch"):
        builtin_schedule("fastercache", load_space("tiny-flux").layout, 20)
    ecad.apply_schedule(tiny_pixart, "taylorseer-3")  # made for each call's step count, like every-N
    out = generate(tiny_pixart, num_inference_steps=6)
    assert torch.isfinite(out).all()
    ecad.remove_schedule(tiny_pixart)
