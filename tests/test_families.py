"""The contract every registered model family meets, one parametrised suite (a new family gets
these tests by registering its adapter and shipping a `tiny-<family>` space).

Each test runs the family's offline tiny pipeline (real diffusers classes, random weights) or its
full-size transformer on meta tensors, through the same code users run.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import ecad
from ecad.cache.hooks import listen_for_branches
from ecad.cache.macs import block_macs, fixed_macs, full_macs, schedule_macs, text_kv_macs
from ecad.models import FAMILIES, adapter_for, adapter_for_pipeline
from ecad.models.base import TransformerDims
from ecad.schedule import Schedule, ScheduleError, load_schedule
from ecad.search.seeds import heuristic_grids
from ecad.spaces import load_space
from tests.conftest import run_space
from tests.conftest import tiny_family as tiny
from tests.reference import hand_cached

STEPS = 6
PROMPTS = ("a red circle on a blue background",)


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def call_of(space, steps: int | None = STEPS, **overrides) -> dict:
    """The space's call; steps=None leaves the step count to an applied schedule."""
    call = {**space.call_kwargs(), **overrides}
    call.pop("num_inference_steps")
    return call if steps is None else {**call, "num_inference_steps": steps}


def run(pipe, space, steps: int | None = STEPS, prompts=PROMPTS, seed: int = 0, **overrides) -> torch.Tensor:
    return run_space(pipe, space, prompts, steps, seed, **overrides)


def random_schedule(layout, steps: int, density: float, seed: int) -> Schedule:
    grid = np.random.default_rng(seed).random((steps, layout.num_blocks, layout.num_components)) < density
    grid[0] = True
    return Schedule(layout, grid, name=f"random_{density}")


# ----------------------------------------------------------------------- registration
def test_the_tiny_space_describes_the_tiny_model(family):
    space, pipe = tiny(family)
    adapter = adapter_for(family)
    assert adapter_for_pipeline(pipe) is adapter and space.adapter is adapter
    assert adapter.layout_of(pipe.transformer) == space.layout
    groups = [(g.name, g.components, g.num_blocks) for g in space.layout.groups]
    assert adapter.layout_from_groups(groups) == space.layout
    assert type(pipe).__name__ == space.pipeline_class in adapter.pipeline_classes.values()
    assert set(adapter.roles) == {c for k in adapter.block_kinds for c in k.components}


def test_every_shipped_space_of_the_family_loads(family):
    from ecad.spaces import list_spaces

    spaces = [load_space(n) for n in list_spaces()]
    mine = [s for s in spaces if s.family == family]
    assert {s.name for s in mine} >= {f"tiny-{family}", adapter_for(family).benchmark_space}
    for space in mine:
        assert space.layout == space.adapter.layout_of_dims(space.adapter.preset_dims(space)) or space.is_tiny


# ----------------------------------------------------------------------- apply
def test_all_compute_schedule_is_bit_identical_to_the_stock_pipeline(family):
    space, pipe = tiny(family)
    stock = run(pipe, space)
    ecad.apply_schedule(pipe, Schedule.full(space.layout, STEPS))
    assert torch.equal(run(pipe, space, steps=None), stock)
    ecad.remove_schedule(pipe)
    assert torch.equal(run(pipe, space), stock)


@pytest.mark.parametrize("kind", ["every_3", "random_0.3", "random_0.7"])
def test_schedules_equal_hand_written_reuse(family, kind):
    """Block paths (norms of reused components skipped) give exactly what the stock block gives
    with each reused component's last output: bit for bit in exact mode."""
    space, pipe = tiny(family)
    schedule = (
        Schedule.every_n(space.layout, STEPS, 3)
        if kind == "every_3"
        else random_schedule(space.layout, STEPS, float(kind.split("_")[1]), seed=len(kind))
    )
    with hand_cached(pipe, schedule):
        reference = run(pipe, space)
    stock = run(pipe, space)
    ecad.apply_schedule(pipe, schedule, exact=True)
    out = run(pipe, space, steps=None)
    assert torch.equal(out, reference)
    assert not torch.equal(out, stock), "the schedule reused nothing"


@pytest.mark.parametrize("n", [2, 3])
def test_the_default_fast_path_differs_from_exact_only_by_rounding(family, n):
    space, pipe = tiny(family)
    schedule = Schedule.every_n(space.layout, STEPS, n)
    ecad.apply_schedule(pipe, schedule, exact=True)
    exact = run(pipe, space, steps=None)
    ecad.apply_schedule(pipe, schedule)
    torch.testing.assert_close(run(pipe, space, steps=None), exact, rtol=0, atol=1e-5)


def test_stock_blocks_pass_the_block_path_check_on_real_calls(family, caplog):
    """On today's diffusers every block path agrees with its stock forward on the arguments the
    transformer really passes (exact bit for bit; fast path and fold within tolerance)."""
    from ecad.cache.check import VERDICTS

    space, pipe = tiny(family)
    with caplog.at_level(logging.WARNING):
        for exact in (True, False):
            ecad.apply_schedule(pipe, random_schedule(space.layout, STEPS, 0.5, seed=2), exact=exact)
            run(pipe, space, steps=None)
            ecad.apply_schedule(pipe, Schedule.every_n(space.layout, STEPS, 3), exact=exact)
            run(pipe, space, steps=None)
    classes = {type(getattr(pipe.transformer, g.name)[i]) for g, i in space.layout.blocks()}  # the stock ones
    mine = {
        k: v
        for k, v in VERDICTS.items()
        if k[0] == family and k[1] in classes and set(k[7:8][0] if k[7:] else ()) <= classes
    }
    assert mine and all(mine.values()), [k for k, v in mine.items() if not v]
    assert {k[6] for k in mine} >= {"exact", "fast"} | ({"fold"} if space.adapter.folds_reused_steps else set())
    assert "differs" not in caplog.text


def test_fully_reused_steps_run_no_norm_or_modulation(family):
    """The block path, not the stock forward, runs reused blocks: the norms that only feed reused
    components are skipped, so a step where every block is reused runs none of its blocks' norms."""
    space, pipe = tiny(family)
    norms = [
        m
        for g, i in space.layout.blocks()
        for m in getattr(pipe.transformer, g.name)[i].modules()
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) or type(m).__name__ == "RMSNorm"
    ]
    calls = [0]
    for m in norms:
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    ecad.apply_schedule(pipe, Schedule.full(space.layout, STEPS))
    calls[0] = 0  # applying checks block paths on probes, which runs the norms too
    run(pipe, space, steps=None)
    per_step = calls[0] / STEPS
    assert per_step > 0
    ecad.apply_schedule(pipe, Schedule.every_n(space.layout, STEPS, 3))  # steps 0 and 3 compute
    run(pipe, space, steps=None)  # the first real call checks the block paths beside the stock forward
    calls[0] = 0
    run(pipe, space, steps=None)
    assert calls[0] == 2 * per_step


def test_timestep_selection_runs_the_chosen_steps_of_the_base_grid(family):
    space, pipe = tiny(family)
    chosen = [0, 2, 3, 5]
    seen: list = []
    listener = listen_for_branches(pipe.transformer, "test.branch")
    pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: seen.append((listener.branch(), float(k["timestep"].flatten()[0]))), with_kwargs=True
    )
    run(pipe, space)
    full, branches = [t for _, t in seen[:: len({b for b, _ in seen})]], {b for b, _ in seen}
    seen.clear()
    schedule = Schedule.full(space.layout, STEPS, timesteps=chosen)
    ecad.apply_schedule(pipe, schedule)
    run(pipe, space, steps=None)
    for branch in branches:  # every guidance branch ran the chosen steps, and only those
        assert [t for b, t in seen if b == branch] == [full[i] for i in chosen]
    assert len(seen) == len(chosen) * len(branches)


# ----------------------------------------------------------------------- MACs
class _FirstCall(Exception):
    pass


def first_transformer_call(pipe, call) -> tuple[tuple, dict]:
    """The arguments of the pipeline's first transformer call (the call stops there)."""
    seen = {}

    def stop(module, args, kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _FirstCall

    handle = pipe.transformer.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        call()
    except _FirstCall:
        pass
    finally:
        handle.remove()
    return seen["args"], seen["kwargs"]


def count(transformer, args, kwargs) -> tuple[dict[str, float], float]:
    """MACs per module (fqn without the root) under FlopCounterMode, and the Linear/Conv-only
    total; the MATH SDPA backend makes attention visible on CPU and meta tensors."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        transformer(*args, **kwargs)
    out = {}
    for key, ops in fc.get_flop_counts().items():
        name = "" if key == "Global" else key.split(".", 1)[1] if "." in key else None
        if name is not None:
            out[name] = sum(ops.values()) / 2
    linear = sum(v for k, v in fc.get_flop_counts()["Global"].items() if "bmm" not in str(k)) / 2
    return out, linear


def check_macs(adapter, transformer, dims: TransformerDims, space, args, kwargs) -> None:
    """Exact equality: every MAC is an integer count, so any difference is a missed or doubled op."""
    counts, linear = count(transformer, args, kwargs)
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    batch, height, width = hidden.shape[0], space.height, space.width
    layout = adapter.layout_of(transformer)
    cost = block_macs(dims, height, width, batch, space.text_length)
    names = {id(m): n for n, m in transformer.named_modules()}
    blocks = 0.0
    for b, (group, i) in enumerate(layout.blocks()):
        modules = adapter.component_modules(getattr(transformer, group.name)[i], group)
        for c, name in enumerate(group.components):
            path = names[id(modules[name])]
            assert cost[b, c] == counts[path], (path, cost[b, c], counts[path])
            blocks += counts[path]
    total = full_macs(dims, height, width, batch, space.text_length)
    assert total == counts[""], (total, counts[""])
    assert fixed_macs(dims, height, width, batch, space.text_length) == counts[""] - blocks
    assert full_macs(dims, height, width, batch, space.text_length, attention_matmuls=False) == linear


def test_macs_match_the_flop_counter_on_the_tiny_models_real_call(family):
    space, pipe = tiny(family)
    adapter = space.adapter
    args, kwargs = first_transformer_call(pipe, lambda: run(pipe, space))
    check_macs(adapter, pipe.transformer, adapter.dims_for_pipeline(pipe, space), space, args, kwargs)


def test_macs_match_the_flop_counter_on_the_full_size_model_on_meta(family):
    adapter = adapter_for(family)
    space = load_space(adapter.benchmark_space)
    pipe = adapter.random_pipeline(space, "meta", space.torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    prompts = adapter.random_prompt_kwargs(pipe, 1, space.text_length, torch.Generator().manual_seed(0))
    prompts = {
        k: v.to("meta", space.torch_dtype) if v.is_floating_point() else v.to("meta") for k, v in prompts.items()
    }
    call = {**call_of(space, steps=2), **prompts, **adapter.embeds_call_kwargs()}
    call.pop("max_sequence_length")
    args, kwargs = first_transformer_call(pipe, lambda: pipe(output_type="pt", **call))
    dims = adapter.preset_dims(space)
    assert adapter.layout_of(pipe.transformer) == space.layout
    assert TransformerDims.from_transformer(pipe.transformer, dims.vae_scale_factor, space.text_length) == dims
    check_macs(adapter, pipe.transformer, dims, space, args, kwargs)


def test_schedule_macs_count_computed_components_only(family):
    space = load_space(f"tiny-{family}")
    from ecad.cache.macs import dims_for_space

    dims = dims_for_space(space)
    cost = block_macs(dims, space.height, space.width)
    fixed = fixed_macs(dims, space.height, space.width)
    schedule = random_schedule(space.layout, 4, 0.5, seed=1)
    report = schedule_macs(schedule, dims, space.height, space.width, text_kv_cache=False)
    want = [fixed + float((schedule.grid[s] * cost).sum()) for s in range(4)]
    assert report.per_step == pytest.approx(want) and report.full == pytest.approx(4 * (fixed + cost.sum()))
    # with the text K/V cache (the default), a computed component's text K/V count once per call
    kv = text_kv_macs(dims, space.height, space.width)
    cached = schedule_macs(schedule, dims, space.height, space.width)
    want = [fixed + float((schedule.grid[s] * (cost - kv)).sum()) + (s == 0) * float(kv.sum()) for s in range(4)]
    assert cached.per_step == pytest.approx(want) and cached.full == report.full
    assert (kv > 0).any() == (family in ("pixart", "sana", "wan"))


@pytest.mark.parametrize("kind", ["full", "every_3", "random_0.4"])
def test_counted_forwards_give_the_schedule_macs(family, kind):
    """What `ecad compare` reports for any cache (forwards that ran, x the MACs model) is what
    the analytic count says for an ecad schedule, at the transformer's real batch."""
    from ecad.cache.macs import dims_for_space, transformer_batch
    from ecad.cache.realised import ComputeCounter

    space, pipe = tiny(family)
    schedule = {
        "full": Schedule.full(space.layout, STEPS),
        "every_3": Schedule.every_n(space.layout, STEPS, 3),
        "random_0.4": random_schedule(space.layout, STEPS, 0.4, seed=4),
    }[kind]
    prompts = PROMPTS * 2
    with ComputeCounter(pipe.transformer, space) as counter:
        ecad.apply_schedule(pipe, schedule)
        run(pipe, space, steps=None, prompts=prompts)
        ecad.remove_schedule(pipe)
        realised = counter.take()
    rows = transformer_batch(family, len(prompts), space.guidance_scale)
    want = schedule_macs(schedule, dims_for_space(space), space.height, space.width, batch=rows)
    assert realised.macs(space) == pytest.approx(want.total, rel=1e-12)
    assert realised.transformer_rows == rows * STEPS


# ----------------------------------------------------------------------- files and seeds
def test_schedule_files_round_trip_and_ecad_export_is_honest(family, tmp_path):
    space = load_space(f"tiny-{family}")
    schedule = random_schedule(space.layout, space.steps, 0.5, seed=3)
    path = schedule.save(tmp_path / "s.json")
    assert load_schedule(path) == schedule
    rows = json.loads(path.read_text())["grid"]
    assert [len(block) for block in rows[0].split()] == [len(g.components) for g, _ in space.layout.blocks()]
    if space.adapter.ecad_count_keys:
        assert load_schedule(schedule.save(tmp_path / "e.json", format="ecad")).grid.tolist() == schedule.grid.tolist()
    else:
        with pytest.raises(ScheduleError, match="ECAD's schedule format has no"):
            schedule.save(tmp_path / "e.json", format="ecad")


def test_heuristic_seeds_are_valid_schedules_that_reuse_by_role(family):
    space = load_space(f"tiny-{family}")
    mask = space.layout.cell_mask()
    grids = dict(heuristic_grids(space))
    for name, grid in grids.items():
        schedule = Schedule(space.layout, grid, name=name)
        space.check_schedule(schedule)
        assert (~schedule.grid[:, mask]).any(), f"{name} reuses nothing"
    roles = space.adapter.roles
    attention = [c for c in roles if roles[c] in ("attention", "cross_attention")]
    g = grids["attention_every_2"]
    for b, (group, _) in enumerate(space.layout.blocks()):
        for c, name in enumerate(group.components):
            assert g[1, b, c] == (name not in attention), (name, "only attention is reused on a non-key step")


def test_the_worker_scores_every_frame(family):
    from ecad.distributed.worker import CandidateEvaluator, WorkerConfig

    space = load_space(f"tiny-{family}")
    worker = CandidateEvaluator(WorkerConfig(space.name, PROMPTS, (0, 1), batch_size=2))
    frames = space.frames or 1
    assert worker.references.shape[0] == 2 * frames
    full = worker.evaluate(space.full_schedule().to_json())
    cached = worker.evaluate(Schedule.every_n(space.layout, space.steps, 3).to_json())
    assert full["quality"] == pytest.approx(1.0) and 0 < cached["quality"] < 1.0


def test_an_adapter_missing_a_family_method_fails_when_made_naming_it():
    """A new family's adapter says what it lacks at once, not with a bare error mid-search."""
    from ecad.models.base import FamilyAdapter

    class Half(FamilyAdapter):
        family = "half"

    with pytest.raises(TypeError, match="encode_prompts"):
        Half()
    with pytest.raises(TypeError, match="folds_reused_steps but does not define step_reuse_prepare"):

        class Folding(FamilyAdapter):
            folds_reused_steps = True
