"""apply_schedule / remove_schedule on stock tiny PixArt and FLUX pipelines."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import ecad
from ecad.cache.hooks import COMPONENT_HOOK
from ecad.cache.plan import CachePlan
from ecad.models import adapter_for_pipeline
from ecad.models.flux import flux_layout
from ecad.models.pixart import pixart_layout
from ecad.schedule import Schedule, ScheduleError
from tests.conftest import PIXART_CALL, generate
from tests.reference import hand_cached

STEPS = 6


def apply_exact(pipe, schedule):
    """Block-by-block reuse (no fused steps): bit-identical to the hand-written reference."""
    return ecad.apply_schedule(pipe, schedule, exact=True)


def _layout(pipe):
    return adapter_for_pipeline(pipe).layout_of(pipe.transformer)


def random_schedule(layout, steps, density, seed) -> Schedule:
    rng = np.random.default_rng(seed)
    grid = rng.random((steps, layout.num_blocks, layout.num_components)) < density
    grid[0] = True
    return Schedule(layout, grid, name=f"random_{density}")


def _hook_count(pipe) -> int:
    n = 0
    for module in pipe.transformer.modules():
        reg = getattr(module, "_diffusers_hook", None)
        if reg is not None:
            n += len(reg.hooks)
    return n


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_pixart_sigma", "tiny_flux"])
def test_all_compute_schedule_is_bit_identical_to_vanilla(fixture, request):
    pipe = request.getfixturevalue(fixture)
    vanilla = generate(pipe, num_inference_steps=STEPS)
    ecad.apply_schedule(pipe, Schedule.full(_layout(pipe), STEPS))
    assert torch.equal(generate(pipe), vanilla)


@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_flux"])
def test_every_third_step_matches_hand_written_reuse(fixture, request):
    pipe = request.getfixturevalue(fixture)
    schedule = Schedule.every_n(_layout(pipe), STEPS, 3)
    with hand_cached(pipe, schedule):
        reference = generate(pipe, num_inference_steps=STEPS)
    vanilla = generate(pipe, num_inference_steps=STEPS)
    apply_exact(pipe, schedule)
    out = generate(pipe)
    assert torch.equal(out, reference)
    assert not torch.equal(out, vanilla)  # the schedule really reused something


@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_flux"])
@pytest.mark.parametrize("density", [0.2, 0.6])
def test_random_mixed_schedules_match_hand_written_reuse(fixture, density, request):
    pipe = request.getfixturevalue(fixture)
    schedule = random_schedule(_layout(pipe), STEPS, density, seed=int(density * 10))
    with hand_cached(pipe, schedule):
        reference = generate(pipe, num_inference_steps=STEPS)
    apply_exact(pipe, schedule)
    assert torch.equal(generate(pipe), reference)


FAST_CASES = [("every", 2), ("every", 3), ("every", 5), ("random", 0.2), ("random", 0.6)]


@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_flux"])
@pytest.mark.parametrize("kind,arg", FAST_CASES)
def test_default_fast_path_matches_block_by_block_reuse_up_to_rounding(fixture, kind, arg, request):
    """Fused multiply-adds and folded reused steps are the same maths: only rounding differs."""
    pipe = request.getfixturevalue(fixture)
    layout = _layout(pipe)
    schedule = Schedule.every_n(layout, STEPS, arg) if kind == "every" else random_schedule(layout, STEPS, arg, 5)
    with hand_cached(pipe, schedule):
        reference = generate(pipe, num_inference_steps=STEPS)
    ecad.apply_schedule(pipe, schedule)
    assert not pipe._ecad_handle.state.exact
    torch.testing.assert_close(generate(pipe), reference, rtol=0, atol=1e-5)
    apply_exact(pipe, schedule)
    assert torch.equal(generate(pipe), reference)


@pytest.mark.parametrize("n", [3, 6])
def test_fast_path_in_bfloat16_is_as_accurate_as_the_exact_path(n):
    """Folded sums and fused multiply-adds kept in the model's half dtype add no error beyond
    the dtype's own: both paths land as close to the float32 result."""
    from ecad.models.pixart import build_tiny_pixart

    def run(dtype, exact):
        pipe = build_tiny_pixart().to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        ecad.apply_schedule(pipe, Schedule.every_n(_layout(pipe), STEPS, n), exact=exact)
        return generate(pipe).float()

    reference = run(torch.float32, True)
    err_exact = (run(torch.bfloat16, True) - reference).abs().max().item()
    err_fast = (run(torch.bfloat16, False) - reference).abs().max().item()
    assert err_fast <= 1.1 * err_exact + 2 / 255


@pytest.mark.parametrize("exact", [True, False])
def test_reused_components_skip_the_norms_that_feed_them(tiny_pixart, exact):
    """A reused attn1 / ff costs no norm or modulation: norm1 runs only where attn1 is computed,
    norm2 only where ff is, in fully and partly reused blocks alike."""
    layout = _layout(tiny_pixart)
    schedule = random_schedule(layout, STEPS, 0.5, seed=2)
    calls = {("norm1", b): 0 for b in range(layout.num_blocks)} | {("norm2", b): 0 for b in range(layout.num_blocks)}
    for b, block in enumerate(tiny_pixart.transformer.transformer_blocks):
        for name in ("norm1", "norm2"):
            getattr(block, name).register_forward_hook(lambda m, a, o, k=(name, b): calls.__setitem__(k, calls[k] + 1))
    ecad.apply_schedule(tiny_pixart, schedule, exact=exact)
    generate(tiny_pixart)
    attn1, ff = layout.blocks()[0][0].components.index("attn1"), layout.blocks()[0][0].components.index("ff")
    for b in range(layout.num_blocks):
        assert calls[("norm1", b)] == int(schedule.grid[:, b, attn1].sum())
        assert calls[("norm2", b)] == int(schedule.grid[:, b, ff].sum())


def test_only_runs_of_two_or_more_fully_reused_steps_are_folded(tiny_pixart):
    """Folding costs about two block-by-block steps of traffic: a lone reused step is not folded."""
    layout = _layout(tiny_pixart)
    assert list(CachePlan.from_schedule(Schedule.every_n(layout, STEPS, 3)).reused_run) == [0, 2, 2, 0, 2, 2]
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(layout, STEPS, 2))
    assert not tiny_pixart._ecad_handle.state.fold.any()
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(layout, STEPS, 3))
    assert list(tiny_pixart._ecad_handle.state.fold) == [False, True, True, False, True, True]
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(layout, STEPS, 3), exact=True)
    assert not tiny_pixart._ecad_handle.state.fold.any()


def test_cfg_with_several_prompts_and_images_per_prompt(tiny_pixart):
    schedule = random_schedule(_layout(tiny_pixart), STEPS, 0.4, seed=3)
    kw = dict(num_images_per_prompt=2, guidance_scale=4.5)
    prompts = ["a red cube", "a blue sphere on grass"]
    with hand_cached(tiny_pixart, schedule):
        reference = generate(tiny_pixart, prompts, num_inference_steps=STEPS, **kw)
    apply_exact(tiny_pixart, schedule)
    out = generate(tiny_pixart, prompts, **kw)
    assert out.shape[0] == 4
    assert torch.equal(out, reference)


def test_flux_true_cfg_keeps_one_cache_per_branch(tiny_flux):
    schedule = Schedule.every_n(_layout(tiny_flux), STEPS, 2)
    kw = dict(true_cfg_scale=2.0, negative_prompt="blurry")
    with hand_cached(tiny_flux, schedule):
        reference = generate(tiny_flux, num_inference_steps=STEPS, **kw)
    apply_exact(tiny_flux, schedule)
    assert torch.equal(generate(tiny_flux, **kw), reference)


def test_lora_loaded_pipeline(tiny_pixart):
    peft = pytest.importorskip("peft")
    # PixArt's transformer has no diffusers LoRA mixin: users inject with peft directly
    peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, target_modules=["to_q", "to_v", "ff.net.2"], init_lora_weights=False),
        tiny_pixart.transformer,
    )
    schedule = Schedule.every_n(_layout(tiny_pixart), STEPS, 2)
    vanilla = generate(tiny_pixart, num_inference_steps=STEPS)
    with hand_cached(tiny_pixart, schedule):
        reference = generate(tiny_pixart, num_inference_steps=STEPS)
    apply_exact(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    assert torch.equal(generate(tiny_pixart), vanilla)
    apply_exact(tiny_pixart, schedule)
    assert torch.equal(generate(tiny_pixart), reference)


def test_lora_on_a_cached_module_loaded_after_apply(tiny_flux):
    """A LoRA on single-block proj_out replaces that Linear: the hook must follow it."""
    peft = pytest.importorskip("peft")
    schedule = Schedule.every_n(_layout(tiny_flux), STEPS, 2)
    apply_exact(tiny_flux, schedule)
    tiny_flux.transformer.add_adapter(
        peft.LoraConfig(r=4, target_modules=["proj_out", "proj_mlp"], init_lora_weights=False), "style"
    )
    out = generate(tiny_flux)
    ecad.remove_schedule(tiny_flux)
    with hand_cached(tiny_flux, schedule):
        reference = generate(tiny_flux, num_inference_steps=STEPS)
    assert torch.equal(out, reference)


@pytest.mark.parametrize("how", ["wrapper", "in_place"])
def test_torch_compile_on_cached_submodules(tiny_pixart, how):
    schedule = random_schedule(_layout(tiny_pixart), STEPS, 0.5, seed=7)
    with hand_cached(tiny_pixart, schedule):
        reference = generate(tiny_pixart, num_inference_steps=STEPS)
    for block in tiny_pixart.transformer.transformer_blocks:
        if how == "wrapper":
            block.ff = torch.compile(block.ff, backend="aot_eager")
            block.attn1 = torch.compile(block.attn1, backend="aot_eager")
        else:
            block.ff.compile(backend="aot_eager")
            block.attn2.compile(backend="aot_eager")
    ecad.apply_schedule(tiny_pixart, schedule)
    out = generate(tiny_pixart)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- timesteps
def test_timestep_selection_runs_only_the_chosen_steps(tiny_pixart):
    layout = _layout(tiny_pixart)
    tiny_pixart.scheduler.set_timesteps(8)
    grid = [int(t) for t in tiny_pixart.scheduler.timesteps]
    chosen = [0, 2, 3, 5, 7]
    vanilla = generate(tiny_pixart, timesteps=[grid[i] for i in chosen], num_inference_steps=None)
    calls = []
    tiny_pixart.transformer.register_forward_pre_hook(lambda m, a: calls.append(1))
    ecad.apply_schedule(tiny_pixart, Schedule.full(layout, 8, timesteps=chosen))
    assert torch.equal(generate(tiny_pixart), vanilla)
    assert len(calls) == len(chosen)


def test_flux_timestep_selection_uses_sigmas(tiny_flux):
    layout = _layout(tiny_flux)
    chosen = [0, 1, 3, 6]
    sigmas = list(np.linspace(1.0, 1 / 8, 8)[chosen])
    vanilla = generate(tiny_flux, sigmas=sigmas, num_inference_steps=len(chosen))
    ecad.apply_schedule(tiny_flux, Schedule.full(layout, 8, timesteps=chosen))
    assert torch.equal(generate(tiny_flux), vanilla)


def test_flux_timestep_selection_refuses_a_scheduler_that_ignores_sigmas(tiny_flux):
    from diffusers import DPMSolverMultistepScheduler

    tiny_flux.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    ecad.apply_schedule(tiny_flux, Schedule.full(_layout(tiny_flux), 8, timesteps=[0, 1, 3, 6]))
    with pytest.raises(ScheduleError, match="use_flow_sigmas"):
        generate(tiny_flux)


# ------------------------------------------------------------- state & memory
def test_state_does_not_leak_between_calls(tiny_pixart):
    schedule = random_schedule(_layout(tiny_pixart), STEPS, 0.3, seed=1)
    ecad.apply_schedule(tiny_pixart, schedule)
    state = tiny_pixart._ecad_handle.state
    first = generate(tiny_pixart, seed=1)
    assert state.cache == {} and not state.active
    generate(tiny_pixart, "another prompt entirely", seed=5)
    assert torch.equal(generate(tiny_pixart, seed=1), first)


def test_state_is_cleared_when_a_call_raises(tiny_pixart):
    schedule = Schedule.every_n(_layout(tiny_pixart), STEPS, 3)
    ecad.apply_schedule(tiny_pixart, schedule)
    state = tiny_pixart._ecad_handle.state
    expected = generate(tiny_pixart)

    def boom(step, t, latents):  # PixArt pipelines take the legacy per-step callback
        if step == 1:  # step 2 reuses step 0's outputs, so they are held now
            assert state.cache, "cache should hold reused outputs mid-call"
            raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        generate(tiny_pixart, callback=boom, callback_steps=1)
    assert state.cache == {} and not state.active
    assert torch.equal(generate(tiny_pixart), expected)


def test_state_belongs_to_the_pipeline_instance(tiny_pixart):
    from ecad.models.pixart import build_tiny_pixart

    other = build_tiny_pixart()
    other.set_progress_bar_config(disable=True)
    ecad.apply_schedule(tiny_pixart, Schedule.every_n(_layout(tiny_pixart), STEPS, 2))
    vanilla_other = generate(other, num_inference_steps=STEPS)
    generate(tiny_pixart)
    assert type(other).__name__ == "PixArtAlphaPipeline" and not hasattr(other, "_ecad_handle")
    assert torch.equal(generate(other, num_inference_steps=STEPS), vanilla_other)


def test_cache_keeps_only_what_later_steps_reuse(tiny_pixart):
    layout = _layout(tiny_pixart)
    schedule = random_schedule(layout, STEPS, 0.4, seed=11)
    plan = CachePlan.from_schedule(schedule)
    ecad.apply_schedule(tiny_pixart, schedule)
    state = tiny_pixart._ecad_handle.state
    sizes = []
    tiny_pixart.transformer.register_forward_hook(lambda m, a, o: sizes.append(len(state.cache)))
    generate(tiny_pixart)
    # after step s the cache holds exactly the outputs that step s+1 reuses
    expected = [int((~schedule.grid[s + 1]).sum()) for s in range(STEPS - 1)] + [0]
    assert sizes == expected
    assert max(sizes) == plan.max_live()
    full = CachePlan.from_schedule(Schedule.full(layout, STEPS))
    assert full.max_live() == 0  # no caching keeps nothing


def test_apply_swap_remove_a_thousand_times_without_growth(tiny_pixart):
    layout = _layout(tiny_pixart)
    schedules = [Schedule.every_n(layout, STEPS, n) for n in (1, 2, 3)]
    expected = generate(tiny_pixart, num_inference_steps=STEPS)
    ecad.apply_schedule(tiny_pixart, schedules[0])
    ecad.remove_schedule(tiny_pixart)
    gc.collect()
    baseline_objects = len(gc.get_objects())
    for i in range(1000):
        ecad.apply_schedule(tiny_pixart, schedules[i % 3])
        ecad.apply_schedule(tiny_pixart, schedules[(i + 1) % 3])  # swap in place
        if i % 100 == 0:
            generate(tiny_pixart)
            # step + guidance on the transformer, block + component hooks, text K/V (transformer, to_k/to_v)
            assert (
                _hook_count(tiny_pixart)
                == 2 + layout.num_blocks * (1 + layout.num_components) + 1 + 2 * layout.num_blocks
            )
        ecad.remove_schedule(tiny_pixart)
        assert _hook_count(tiny_pixart) == 0
    gc.collect()
    assert len(gc.get_objects()) - baseline_objects < 2000
    assert type(tiny_pixart).__name__ == "PixArtAlphaPipeline" and type(tiny_pixart).__module__.startswith("diffusers")
    assert torch.equal(generate(tiny_pixart, num_inference_steps=STEPS), expected)


def test_swapping_schedules_gives_each_schedules_output(tiny_flux):
    layout = _layout(tiny_flux)
    a, b = Schedule.every_n(layout, STEPS, 2), Schedule.every_n(layout, STEPS, 3)
    ecad.apply_schedule(tiny_flux, a)
    out_a = generate(tiny_flux)
    ecad.apply_schedule(tiny_flux, b)
    out_b = generate(tiny_flux)
    ecad.apply_schedule(tiny_flux, a)
    assert torch.equal(generate(tiny_flux), out_a) and not torch.equal(out_a, out_b)
    assert ecad.current_schedule(tiny_flux) is a


# ------------------------------------------------------------------- errors
def test_wrong_family_is_refused(tiny_pixart):
    with pytest.raises(ScheduleError, match="'flux' family but the model is 'pixart'"):
        ecad.apply_schedule(tiny_pixart, Schedule.full(flux_layout(2, 2), STEPS))


def test_wrong_block_count_is_refused(tiny_pixart):
    with pytest.raises(ScheduleError, match="does not match the pipeline's transformer"):
        ecad.apply_schedule(tiny_pixart, Schedule.full(pixart_layout(28), 20))


def test_wrong_step_count_is_refused(tiny_pixart):
    ecad.apply_schedule(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    with pytest.raises(ScheduleError, match="made for 6 steps but this call runs 9"):
        generate(tiny_pixart, num_inference_steps=9)
    assert not tiny_pixart._ecad_handle.state.active


def test_unsupported_pipeline_is_refused():
    class NotAPipeline:
        transformer = None

    with pytest.raises(TypeError, match="supported pipelines: FluxPipeline, PixArtAlphaPipeline"):
        ecad.apply_schedule(NotAPipeline(), Schedule.full(pixart_layout(4), 2))


def test_removing_when_nothing_applied_is_a_no_op(tiny_pixart):
    ecad.remove_schedule(tiny_pixart)
    assert _hook_count(tiny_pixart) == 0


def test_component_hooks_are_named(tiny_pixart):
    ecad.apply_schedule(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    block = tiny_pixart.transformer.transformer_blocks[0]
    assert COMPONENT_HOOK in block.attn1._diffusers_hook.hooks


@pytest.mark.slow
def test_torch_compile_inductor_on_cached_submodules(tiny_flux):
    """The real compiler (inductor): slow on CPU, so outside the default suite (`make test-all`)."""
    schedule = random_schedule(_layout(tiny_flux), STEPS, 0.5, seed=9)
    with hand_cached(tiny_flux, schedule):
        reference = generate(tiny_flux, num_inference_steps=STEPS)
    for block in tiny_flux.transformer.transformer_blocks:
        block.ff = torch.compile(block.ff)
    for block in tiny_flux.transformer.single_transformer_blocks:
        block.proj_out.compile()
    ecad.apply_schedule(tiny_flux, schedule)
    torch.testing.assert_close(generate(tiny_flux), reference, rtol=1e-4, atol=1e-5)


def _changed(block, name: str, forward) -> None:
    block.__class__ = type(name, (type(block),), {"forward": forward})


def test_a_block_that_differs_from_the_block_path_keeps_the_stock_forward(tiny_pixart, caplog):
    """If a diffusers release changes the block, ecad notices on its first real call and that block
    runs the stock forward, so results stay those of stock reuse; the fold, which assumes every
    block's maths, notices too and steps run block by block."""
    block = tiny_pixart.transformer.transformer_blocks[1]
    stock_forward = type(block).forward
    _changed(
        block, "ChangedBlock", lambda self, hidden_states, *a, **k: stock_forward(self, hidden_states * 1.01, *a, **k)
    )
    layout = _layout(tiny_pixart)
    for schedule in (random_schedule(layout, STEPS, 0.5, seed=4), Schedule.every_n(layout, STEPS, 3)):
        ecad.remove_schedule(tiny_pixart)  # the reference runs on the stock pipeline
        with hand_cached(tiny_pixart, schedule):
            reference = generate(tiny_pixart, num_inference_steps=STEPS)
        apply_exact(tiny_pixart, schedule)
        assert torch.equal(generate(tiny_pixart), reference)
        ecad.apply_schedule(tiny_pixart, schedule)  # the fast path and, for every-3, the fold
        torch.testing.assert_close(generate(tiny_pixart), reference, rtol=0, atol=1e-5)
    assert "ChangedBlock.forward differs from ecad's pixart block path (exact)" in caplog.text
    assert "ChangedBlock.forward differs from ecad's pixart folded steps" in caplog.text


def test_a_block_changed_only_in_how_it_uses_the_text_mask_is_caught_on_the_real_call(tiny_pixart, caplog):
    """A probe that passes only hidden states, text and timestep cannot see this change: PixArt's
    transformer passes the text mask on every call, and a short (padded) prompt makes it matter."""
    from ecad.cache.check import VERDICTS

    block = tiny_pixart.transformer.transformer_blocks[2]
    stock_forward = type(block).forward

    def ignores_the_mask(
        self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, **kw
    ):
        return stock_forward(self, hidden_states, attention_mask, encoder_hidden_states, None, **kw)

    _changed(block, "MaskBlindBlock", ignores_the_mask)
    schedule = random_schedule(_layout(tiny_pixart), STEPS, 0.5, seed=6)
    with hand_cached(tiny_pixart, schedule):
        reference = generate(tiny_pixart, "a cat", num_inference_steps=STEPS)
    apply_exact(tiny_pixart, schedule)
    assert torch.equal(generate(tiny_pixart, "a cat"), reference)
    assert "MaskBlindBlock.forward differs" in caplog.text and "encoder_attention_mask" in caplog.text
    verdicts = {k: v for k, v in VERDICTS.items() if k[1].__name__ == "MaskBlindBlock"}
    assert verdicts and not any(verdicts.values())


def test_positional_call_arguments_are_checked_like_keywords(tiny_pixart):
    """`pipe(prompt, negative_prompt, steps)` sets the step count by position; it is checked too."""
    ecad.apply_schedule(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    with pytest.raises(ScheduleError, match=f"made for {STEPS} steps but this call runs 3"):
        tiny_pixart("a red cube", "", 3, **PIXART_CALL)


def test_a_transformer_shared_with_a_scheduled_pipeline_is_refused_clearly(tiny_pixart):
    ecad.apply_schedule(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    other = type(tiny_pixart)._ecad_base(**tiny_pixart.components)
    with pytest.raises(ScheduleError, match="remove_schedule on that pipeline first"):
        ecad.apply_schedule(other, Schedule.full(_layout(tiny_pixart), STEPS))


def test_swapping_in_a_transformer_of_another_depth_names_both_layouts(tiny_pixart):
    from ecad.models.pixart import build_tiny_pixart

    ecad.apply_schedule(tiny_pixart, Schedule.full(_layout(tiny_pixart), STEPS))
    tiny_pixart.transformer = build_tiny_pixart(num_blocks=2).transformer
    with pytest.raises(ScheduleError, match="does not match the pipeline's transformer"):
        generate(tiny_pixart)


def test_a_flux_block_that_differs_from_its_path_keeps_the_stock_forward(tiny_flux, caplog):
    block = tiny_flux.transformer.single_transformer_blocks[0]
    stock_forward = type(block).forward

    def changed_forward(self, hidden_states, *args, **kwargs):
        return stock_forward(self, hidden_states * 1.01, *args, **kwargs)

    block.__class__ = type("ChangedSingleBlock", (type(block),), {"forward": changed_forward})
    schedule = Schedule.every_n(_layout(tiny_flux), STEPS, 3)
    with hand_cached(tiny_flux, schedule):
        reference = generate(tiny_flux, num_inference_steps=STEPS)
    apply_exact(tiny_flux, schedule)
    assert torch.equal(generate(tiny_flux), reference)
    assert "ChangedSingleBlock.forward differs" in caplog.text


# ---------------------------------------------------------------- transformer-level API
@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_flux"])
def test_a_transformer_follows_a_schedule_in_any_denoising_loop(fixture, request):
    """apply_schedule(transformer, s) for users with their own loop: here the stock pipeline's loop,
    which is not wrapped; each generation is one step count per branch, and the next one starts after
    ecad.reset_schedule or diffusers' own reset_stateful_hooks (ecad's step hook is stateful)."""
    pipe = request.getfixturevalue(fixture)
    schedule = random_schedule(_layout(pipe), STEPS, 0.4, seed=7)
    apply_exact(pipe, schedule)
    wanted = generate(pipe)
    ecad.remove_schedule(pipe)
    t = pipe.transformer
    ecad.apply_schedule(t, schedule, exact=True)
    assert ecad.current_schedule(t) is schedule and type(pipe).__name__ == type(pipe).__name__
    assert torch.equal(generate(pipe, num_inference_steps=STEPS), wanted)
    if hasattr(t, "enable_cache"):  # diffusers' CacheMixin: the pipeline resets stateful hooks after each call
        assert torch.equal(generate(pipe, num_inference_steps=STEPS), wanted)
    else:
        with pytest.raises(ScheduleError, match="more than the schedule's 6 steps.*ecad.reset_schedule"):
            generate(pipe, num_inference_steps=STEPS)  # a second generation without a reset
    ecad.reset_schedule(t)
    assert torch.equal(generate(pipe, num_inference_steps=STEPS), wanted)
    t._diffusers_hook.reset_stateful_hooks()
    assert torch.equal(generate(pipe, num_inference_steps=STEPS), wanted)
    with pytest.raises(ScheduleError, match="applied to the transformer itself"):
        ecad.apply_schedule(pipe, schedule)
    ecad.remove_schedule(t)
    assert _hook_count(pipe) == 0 and ecad.current_schedule(t) is None


def test_the_branch_is_the_callers_cache_context(tiny_flux):
    """FLUX's true CFG calls the transformer inside cache_context('cond') then ('uncond'): each
    branch counts its own steps and keeps its own cache, with no CFG rule of ecad's own."""
    ecad.apply_schedule(tiny_flux, Schedule.every_n(_layout(tiny_flux), STEPS, 2))
    state = tiny_flux._ecad_handle.state
    seen = []
    tiny_flux.transformer.register_forward_hook(lambda m, a, o: seen.append((state.branch, state.step)))
    generate(tiny_flux, true_cfg_scale=2.0, negative_prompt="blurry")
    assert seen == [(b, s) for s in range(STEPS) for b in ("cond", "uncond")]


@pytest.mark.parametrize("fixture", ["tiny_pixart", "tiny_flux"])
def test_reuse_flags_on_the_first_step_run_as_compute(fixture, request):
    """Nothing is cached before the first step: a schedule that flags reuse there (ECAD's own files
    do) runs exactly like the same schedule with those flags set, and the heatmap shades them computed."""
    from ecad.report.plots import schedule_image

    pipe = request.getfixturevalue(fixture)
    schedule = Schedule.every_n(_layout(pipe), STEPS, 3)
    flagged = schedule.grid.copy()
    flagged[0, 1, :] = False
    odd = Schedule(_layout(pipe), flagged)
    apply_exact(pipe, schedule)
    want = generate(pipe)
    apply_exact(pipe, odd)
    assert torch.equal(generate(pipe), want)
    assert (schedule_image(odd)[0] == 1).all() and odd.compute_fraction() == schedule.compute_fraction()
