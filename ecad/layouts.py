"""The shape of a schedule's compute grid: block groups and their components.

A layout says how one transformer is cut into cacheable pieces. It is plain data that knows no
model family: each family's adapter (ecad/models/) builds its layouts and says where the pieces
live in the module tree; schedules, search spaces, hooks and MAC counting read them from here.

Groups of one family may hold different numbers of components (SD3.5's dual-attention blocks
have four, its last block two). The grid is then `[steps, blocks, max components]`, and the cells
past a block's own components are padding: there is nothing to reuse there, so they always read
as "compute" and cost nothing (`cell_mask` tells them apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ecad.errors import shown

# Bounds every reader states in its errors: the largest DiTs have 60 blocks and 3-4 components, so
# these are far above any real model and keep a hostile file from allocating a huge grid.
MAX_BLOCKS = 1000  # blocks per layout, all groups together
MAX_COMPONENTS = 16  # components per block
MAX_NAME_LENGTH = 200  # group, component and key-prefix names


@dataclass(frozen=True)
class BlockGroup:
    """A run of consecutive transformer blocks that share one set of components."""

    name: str  # attribute of the transformer holding the blocks, e.g. "transformer_blocks"
    num_blocks: int
    components: tuple[str, ...]  # component names, in grid order (ECAD order where ECAD has the family)
    key_prefix: str = ""  # ECAD JSON block-key prefix ("" or "single_")
    label: str = field(default="", compare=False)  # short display name ("double", "single"); not part of identity

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Layout:
    """Family plus its block groups: the shape of a schedule's compute grid."""

    family: str  # the adapter's registry key
    groups: tuple[BlockGroup, ...]

    @property
    def num_blocks(self) -> int:
        return sum(g.num_blocks for g in self.groups)

    @property
    def num_components(self) -> int:
        """Grid width: the most components any block has (shorter blocks are padded)."""
        return max((len(g.components) for g in self.groups), default=0)

    @property
    def ragged(self) -> bool:
        return len({len(g.components) for g in self.groups}) > 1

    @cached_property
    def _blocks(self) -> tuple[tuple[BlockGroup, int], ...]:
        out, next_index = [], {}
        for g in self.groups:  # groups sharing one module list (SD3) continue its numbering
            start = next_index.get(g.name, 0)
            out.extend((g, start + i) for i in range(g.num_blocks))
            next_index[g.name] = start + g.num_blocks
        return tuple(out)

    def blocks(self) -> tuple[tuple[BlockGroup, int], ...]:
        """(group, index in the group's module list) per block, in grid order; computed once."""
        return self._blocks

    def block_key(self, flat_index: int) -> str:
        group, i = self._blocks[flat_index]
        return f"{group.key_prefix}{i}"

    @cached_property
    def _mask(self) -> np.ndarray:
        mask = np.zeros((self.num_blocks, self.num_components), dtype=bool)
        for b, (group, _) in enumerate(self._blocks):
            mask[b, : len(group.components)] = True
        mask.setflags(write=False)
        return mask

    def cell_mask(self) -> np.ndarray:
        """[blocks, components] True where the block has that component (False: padding)."""
        return self._mask

    def describe(self) -> str:
        return self.family + "(" + ", ".join(f"{g.name}={g.num_blocks}x{list(g.components)}" for g in self.groups) + ")"

    def to_json(self) -> dict:
        return {
            "family": self.family,
            "groups": [
                {
                    "name": g.name,
                    "num_blocks": g.num_blocks,
                    "components": list(g.components),
                    "key_prefix": g.key_prefix,
                }
                for g in self.groups
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> Layout:
        """Structure only, every field checked (a ValueError names it); a family's adapter then checks
        that the layout describes a real transformer."""
        if not isinstance(data, dict):
            raise ValueError(f"must be an object with 'family' and 'groups', got {shown(data)}")
        unknown = sorted(set(data) - {"family", "groups"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; a layout has only 'family' and 'groups'")
        family = data.get("family")
        if not isinstance(family, str):
            raise ValueError(f"'family' must be a string, got {shown(family)}")
        groups = data.get("groups")
        if not isinstance(groups, list) or not 1 <= len(groups) <= 8:
            raise ValueError(f"'groups' must be a list of 1 to 8 block groups, got {shown(groups)}")
        out, total = [], 0
        for i, g in enumerate(groups):
            where = f"groups[{i}]"
            if not isinstance(g, dict):
                raise ValueError(f"{where} must be an object, got {shown(g)}")
            unknown = sorted(set(g) - {"name", "num_blocks", "components", "key_prefix"})
            if unknown:
                raise ValueError(f"{where}: unknown field {unknown[0]!r}")
            name, n, comps, prefix = g.get("name"), g.get("num_blocks"), g.get("components"), g.get("key_prefix", "")
            for label, value in (("name", name), ("key_prefix", prefix)):
                if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
                    raise ValueError(f"{where}.{label} must be a string of at most {MAX_NAME_LENGTH} characters")
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_BLOCKS:
                raise ValueError(f"{where}.num_blocks must be an integer 1..{MAX_BLOCKS}, got {shown(n)}")
            total += n
            if total > MAX_BLOCKS:
                raise ValueError(f"the groups hold more than {MAX_BLOCKS} blocks in all")
            if (
                not isinstance(comps, list)
                or not 1 <= len(comps) <= MAX_COMPONENTS
                or not all(isinstance(c, str) and 0 < len(c) <= MAX_NAME_LENGTH for c in comps)
            ):
                raise ValueError(f"{where}.components must be a list of 1 to {MAX_COMPONENTS} component names")
            out.append(BlockGroup(name, n, tuple(comps), prefix))
        return cls(family=family, groups=tuple(out))
