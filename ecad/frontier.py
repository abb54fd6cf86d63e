"""Pareto sets over (lower-is-better) objective vectors."""

from __future__ import annotations

import numpy as np


def pareto_indices(points: np.ndarray) -> list[int]:
    """Indices of the non-dominated rows (all objectives minimised). Of exact duplicates only
    the first is kept, so a frontier never lists the same trade-off twice."""
    pts = np.asarray(points, dtype=float)
    keep: list[int] = []
    for i in range(len(pts)):
        p = pts[i]
        dominated = np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
        duplicate = any(np.array_equal(pts[j], p) for j in keep)
        if not dominated and not duplicate:
            keep.append(i)
    return keep
