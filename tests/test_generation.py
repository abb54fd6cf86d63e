"""The one rendering path: prompts encoded once, per-seed noise, no state across calls."""

from __future__ import annotations

import torch

from ecad.generation import Renderer, to_uint8
from ecad.schedule import Schedule
from ecad.spaces import load_space

PROMPTS = ("a red circle on a blue background", "a small green square")


def test_prompts_are_encoded_once_and_the_text_encoders_freed():
    renderer = Renderer(load_space("tiny-pixart"), PROMPTS, "cpu")
    assert renderer.embeds["prompt_embeds"].shape[0] == len(PROMPTS)
    assert all(getattr(renderer.pipe, n) is None for n in renderer.pipe.components if n.startswith("text_encoder"))


def test_an_item_renders_the_same_image_in_any_batch_and_call_after_call():
    """Noise comes from the item's own seed and every call starts from fresh hook state, so what a
    search scored is what any later call (or `ecad generate`) renders for the same prompt and seed."""
    space = load_space("tiny-pixart")
    renderer = Renderer(space, PROMPTS, "cpu")
    renderer.apply(Schedule.every_n(space.layout, space.steps, 3))
    items = renderer.items([0, 1])
    first = renderer.render(items, batch_size=4)
    again = renderer.render(items, batch_size=4)
    assert torch.equal(first.images, again.images) and first.finite and first.frames == 1
    swapped = renderer.render(items[::-1], batch_size=4)
    assert torch.equal(swapped.images.flip(0), first.images)
    assert len(first.ms_per_item) == 1 and first.full_batches == [True]


def test_a_video_renders_every_frame_item_by_item():
    space = load_space("tiny-wan")
    renderer = Renderer(space, PROMPTS[:1], "cpu")
    rendered = renderer.render(renderer.items([0, 1]), batch_size=1)
    assert rendered.frames == space.frames and rendered.images.shape == (2 * space.frames, 3, space.height, space.width)
    assert rendered.images.dtype == torch.uint8 and rendered.full_batches == [True, True]


def test_8_bit_conversion_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.6 / 255, 0.2, 1.0, 1.5])
    assert to_uint8(x).tolist() == [0, 0, 1, 51, 255, 255]
