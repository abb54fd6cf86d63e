"""Numbers with units, as ecad prints them: one formatter, so MACs read the same everywhere."""

from __future__ import annotations


def si_units(value: float) -> str:
    """`value` with the SI prefix that keeps 3-4 significant digits and a trailing space, ready
    for a unit: "1.234 T" for a real model's MACs, "12.345 M" for a tiny one's."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3f} {unit}"
    return f"{value:.0f} "
