"""The captioned-shapes data set: small procedural pictures of one shape with their captions.

It is what the offline `shapes-*` models are trained on and what the `shapes-score` / `shapes-fid`
toy metrics judge against, so the models behave like trained text-to-image models (they follow
their captions, their features change little between adjacent steps) without any download.

Every picture shows one shape (`SHAPES`) in a named colour (`COLOURS`) on a plain background of
another named colour, in one of two sizes and five positions. A caption names all five
attributes in one fixed grammar::

    a small red circle in the top left on a blue background

which gives 5 x 8 x 7 x 2 x 5 = 2800 distinct captions. `parse_caption` reads a caption back into
its attributes (the one home of the grammar). The captions are split once, by a seeded
permutation, into training and held-out captions, so held-out evaluation asks a model for
attribute combinations it never saw. Rendering is numpy + Pillow, seeded: the same seed gives the
same pictures (positions and sizes jitter by a pixel or so, drawn at 4x and downsampled with an
antialiasing filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ecad.errors import EcadError, shown

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
IMAGE_SIZE = 32
HELD_OUT_FRACTION = 0.1
SPLIT_SEED = 0
# what each attribute can be, in the order of `Attributes`' fields (the classifier's heads)
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOUR_NAMES,
    "background": COLOUR_NAMES,
    "size": SIZES,
    "position": POSITIONS,
}
Split = Literal["train", "held-out", "all"]


class CaptionError(EcadError, ValueError):
    """A caption outside the shapes grammar; the message quotes the grammar and the words it knows."""


@dataclass(frozen=True, order=True)
class Attributes:
    """What one picture shows; `caption` says it in the data set's grammar."""

    shape: str
    colour: str
    background: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTE_VALUES.items():
            if getattr(self, name) not in values:
                raise CaptionError(f"shapes: {name} {shown(getattr(self, name))} is not one of {', '.join(values)}")
        if self.colour == self.background:
            raise CaptionError(f"shapes: a {self.colour} shape on a {self.background} background would be invisible")

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} in the {self.position} on a {self.background} background"

    def labels(self) -> dict[str, int]:
        """Each attribute as the index of its value in `ATTRIBUTE_VALUES`."""
        return {name: values.index(getattr(self, name)) for name, values in ATTRIBUTE_VALUES.items()}


GRAMMAR = "a {size} {colour} {shape} in the {position} on a {background} background"


def parse_caption(text: str) -> Attributes:
    """The attributes a caption names, or a CaptionError quoting the grammar (case and outer
    spaces are ignored, as the pipelines' own text preprocessing does)."""
    if not isinstance(text, str):
        raise CaptionError(f"shapes: a caption must be a string, got {shown(text)}")
    words = text.strip().lower().split()
    known = f"sizes {'/'.join(SIZES)}; colours {'/'.join(COLOUR_NAMES)}; shapes {'/'.join(SHAPES)}; positions " + (
        "/".join(POSITIONS)
    )
    fail = CaptionError(
        f"shapes: caption {shown(text)} is not in the shapes grammar {GRAMMAR!r} ({known}); "
        "the shapes metrics only score captions of the shapes data set (ecad.models.shapes)"
    )
    # a SIZE COLOUR SHAPE in the POS... on a BG background; a position is one or two words
    if len(words) not in (11, 12) or words[0] != "a" or words[4:6] != ["in", "the"] or words[-1] != "background":
        raise fail
    position = " ".join(words[6:-4])
    if words[-4:-2] != ["on", "a"]:
        raise fail
    try:
        return Attributes(shape=words[3], colour=words[2], background=words[-2], size=words[1], position=position)
    except CaptionError:
        raise fail from None


def all_attributes() -> list[Attributes]:
    """Every caption's attributes, in a fixed order."""
    return [
        Attributes(shape, colour, background, size, position)
        for shape in SHAPES
        for colour in COLOUR_NAMES
        for background in COLOUR_NAMES
        if background != colour
        for size in SIZES
        for position in POSITIONS
    ]


def split_attributes(split: Split, seed: int = SPLIT_SEED) -> list[Attributes]:
    """The training or held-out captions (a seeded permutation, HELD_OUT_FRACTION held out)."""
    if split not in ("train", "held-out", "all"):
        raise ValueError(f"split must be 'train', 'held-out' or 'all', got {split!r}")
    every = all_attributes()
    if split == "all":
        return every
    order = np.random.default_rng(seed).permutation(len(every))
    n_held = int(round(len(every) * HELD_OUT_FRACTION))
    chosen = order[:n_held] if split == "held-out" else order[n_held:]
    return [every[i] for i in sorted(chosen)]


# ------------------------------------------------------------------ rendering
_SUPERSAMPLE = 4
_RADIUS = {"small": 0.14, "large": 0.25}  # half the shape's extent, as a fraction of the side
_CENTRES = {
    "center": (0.5, 0.5),
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
}


def render(attributes: Attributes, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One picture as uint8 [size, size, 3]; `rng` jitters the centre and radius slightly."""
    from PIL import Image, ImageDraw

    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[attributes.background])
    draw = ImageDraw.Draw(image)
    cx, cy = _CENTRES[attributes.position]
    jitter = rng.uniform(-0.03, 0.03, size=2)
    r = _RADIUS[attributes.size] * rng.uniform(0.9, 1.1) * big
    x, y = (cx + jitter[0]) * big, (cy + jitter[1]) * big
    fill = COLOURS[attributes.colour]
    if attributes.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif attributes.shape == "square":
        s = r * 0.85
        draw.rectangle((x - s, y - s, x + s, y + s), fill=fill)
    elif attributes.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill)
    elif attributes.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    else:  # cross
        w = r * 0.38
        draw.rectangle((x - r, y - w, x + r, y + w), fill=fill)
        draw.rectangle((x - w, y - r, x + w, y + r), fill=fill)
    return np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.uint8)


@dataclass
class ShapesBatch:
    """Pictures with their captions and attribute labels (index per attribute, see `ATTRIBUTE_VALUES`)."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    attributes: list[Attributes]

    @property
    def captions(self) -> list[str]:
        return [a.caption for a in self.attributes]

    @property
    def labels(self) -> dict[str, np.ndarray]:
        rows = [a.labels() for a in self.attributes]
        return {name: np.array([r[name] for r in rows], dtype=np.int64) for name in ATTRIBUTE_VALUES}

    def tensor(self):
        """The pictures as float32 [N, 3, H, W] in [0, 1] (what metrics and VAEs take)."""
        import torch

        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(255)


def sample(n: int, split: Split = "train", seed: int = 0, size: int = IMAGE_SIZE) -> ShapesBatch:
    """`n` pictures of captions drawn uniformly from `split`; the same arguments give the same batch."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = split_attributes(split)
    rng = np.random.default_rng([seed, {"train": 0, "held-out": 1, "all": 2}[split]])
    picks = rng.integers(0, len(pool), size=n)
    attributes = [pool[i] for i in picks]
    images = np.stack([render(a, rng, size) for a in attributes]) if n else np.zeros((0, size, size, 3), np.uint8)
    return ShapesBatch(images, attributes)


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour nearest (Euclidean in RGB) to one colour given as 3 numbers in 0..255."""
    palette = np.array(list(COLOURS.values()), dtype=np.float64)
    return COLOUR_NAMES[int(np.argmin(((palette - np.asarray(rgb, np.float64)) ** 2).sum(axis=1)))]


def dominant_colours(image: np.ndarray) -> tuple[str, str]:
    """(shape colour, background colour) of a uint8 [H, W, 3] picture read off its pixels, without
    any learned model: the background is the median of the border pixels, the shape colour the
    median of the 3% of pixels farthest from it (fewer than the smallest shape covers). Used to check, with no
    classifier involved, that a model paints the colours its caption names."""
    pixels = np.asarray(image, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background = np.median(border, axis=0)
    flat = pixels.reshape(-1, 3)
    distance = ((flat - background) ** 2).sum(axis=1)
    far = flat[np.argsort(distance)[-max(1, round(0.03 * len(flat))) :]]
    return nearest_colour(np.median(far, axis=0)), nearest_colour(background)
