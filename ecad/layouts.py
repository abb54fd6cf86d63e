"""Block/component layouts of the model families ecad knows.

A layout is the one place that says how a family's transformer is cut into cacheable
pieces; schedules, search spaces, hooks and MAC counting all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockGroup:
    """A run of identical transformer blocks that share one set of components."""

    name: str  # attribute of the transformer holding the blocks, e.g. "transformer_blocks"
    num_blocks: int
    components: tuple[str, ...]  # ECAD component names, in ECAD order
    key_prefix: str = ""  # ECAD JSON block-key prefix ("" or "single_")


@dataclass(frozen=True)
class Layout:
    """Family plus its block groups: the shape of a schedule's compute grid."""

    family: str  # "pixart" | "flux"
    groups: tuple[BlockGroup, ...]

    @property
    def num_blocks(self) -> int:
        return sum(g.num_blocks for g in self.groups)

    @property
    def num_components(self) -> int:
        """Components per block; every group of a family has the same count (3)."""
        return len(self.groups[0].components)

    def blocks(self) -> list[tuple[BlockGroup, int]]:
        """Flat list of (group, index within group), in ECAD order."""
        return [(g, i) for g in self.groups for i in range(g.num_blocks)]

    def block_key(self, flat_index: int) -> str:
        group, i = self.blocks()[flat_index]
        return f"{group.key_prefix}{i}"

    def describe(self) -> str:
        return self.family + "(" + ", ".join(f"{g.name}={g.num_blocks}x{list(g.components)}" for g in self.groups) + ")"

    def to_json(self) -> dict:
        return {
            "family": self.family,
            "groups": [
                {"name": g.name, "num_blocks": g.num_blocks, "components": list(g.components), "key_prefix": g.key_prefix}
                for g in self.groups
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Layout":
        return cls(
            family=data["family"],
            groups=tuple(
                BlockGroup(g["name"], int(g["num_blocks"]), tuple(g["components"]), g.get("key_prefix", ""))
                for g in data["groups"]
            ),
        )


PIXART_COMPONENTS = ("attn1", "attn2", "ff")
FLUX_DOUBLE_COMPONENTS = ("full_attn", "full_ff", "full_ff_context")
FLUX_SINGLE_COMPONENTS = ("single_attn", "single_proj_mlp", "single_proj_out")
FAMILIES = ("pixart", "flux")


def pixart_layout(num_blocks: int = 28) -> Layout:
    return Layout("pixart", (BlockGroup("transformer_blocks", num_blocks, PIXART_COMPONENTS),))


def flux_layout(num_double: int = 19, num_single: int = 38) -> Layout:
    return Layout(
        "flux",
        (
            BlockGroup("transformer_blocks", num_double, FLUX_DOUBLE_COMPONENTS),
            BlockGroup("single_transformer_blocks", num_single, FLUX_SINGLE_COMPONENTS, key_prefix="single_"),
        ),
    )


def layout_for(family: str, num_blocks: int, num_single_blocks: int = 0) -> Layout:
    if family == "pixart":
        return pixart_layout(num_blocks)
    if family == "flux":
        return flux_layout(num_blocks, num_single_blocks)
    raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
