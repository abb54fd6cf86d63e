"""Screening: race a generation's most promising candidates first, by a model of quality fitted
to the evaluations so far.

Racing (ecad.search.racing) stops a candidate once its optimistic quality, at its known cost, is
dominated by a fully evaluated point; a generation races in `WAVES` waves, each judged against
what the waves before it completed. So the order matters: a dominated candidate racing after the
generation's new frontier points has completed stops sooner than one racing before them. Without
a model the waves come from the genome hash (`race_wave`): a fair, uninformed split. Screening
fits a ridge regression of quality on the genome's bits (one weight per (step, block, component)
cell and timestep bit: the per-cell sensitivity of the metric, additively) to every complete
evaluation of the earlier generations, predicts each candidate's quality, and fills the waves in
order of promise: how many points, measured ones of the archive and predicted ones of the other
candidates, dominate its (predicted quality, MACs). Candidates predicted non-dominated race
first and set the bar; those predicted dominated race last, against the strongest archive.

Screening only orders the races: every candidate still races, every stop is still decided by the
candidate's own images against complete points, and the frontier holds only complete points. What
a wrong model costs is images, never a frontier point.

Determinism: the model is fitted on evaluations completed before the generation began (each log
record says in which generation its race completed), ordered by key, so a run resumed
mid-generation assigns the same waves, and the result does not depend on the number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecad.search.racing import WAVES, dominated, race_wave

# ridge penalties tried; the one with the lowest leave-one-out error is kept
ALPHAS = tuple(10.0**e for e in range(-2, 5))
MIN_SAMPLES = 4  # below this many complete evaluations there is nothing to fit: hash waves


@dataclass(frozen=True)
class QualityModel:
    """Ridge regression of quality on genome bits: quality ~ intercept + bits . weights."""

    mean_bits: np.ndarray
    weights: np.ndarray
    intercept: float
    alpha: float
    samples: int
    loo_rmse: float  # leave-one-out root mean squared error of the kept penalty
    spread: float  # standard deviation of the qualities it was fitted to (what loo_rmse compares with)

    def predict(self, bits: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(bits, dtype=np.float64))
        return self.intercept + (x - self.mean_bits) @ self.weights

    def to_json(self) -> dict[str, float | int]:
        return {"samples": self.samples, "alpha": self.alpha, "loo_rmse": self.loo_rmse, "spread": self.spread}


def fit_quality_model(bits: np.ndarray, quality: np.ndarray) -> QualityModel | None:
    """Fit the ridge model (None below `MIN_SAMPLES` rows). Solved in its dual form, since there are
    far more bits than evaluations: weights = Xc^T (Xc Xc^T + alpha I)^-1 yc with the bits and the
    qualities centred (the intercept is not penalised). The penalty is chosen by exact
    leave-one-out error, r_i / (1 - h_ii), from one eigendecomposition of the Gram matrix."""
    x = np.asarray(bits, dtype=np.float64)
    y = np.asarray(quality, dtype=np.float64)
    n = len(y)
    if n < MIN_SAMPLES:
        return None
    mean_bits, mean_y = x.mean(axis=0), float(y.mean())
    xc, yc = x - mean_bits, y - mean_y
    eigvals, eigvecs = np.linalg.eigh(xc @ xc.T)
    eigvals = np.clip(eigvals, 0.0, None)
    proj = eigvecs.T @ yc
    best: tuple[float, float] | None = None
    for alpha in ALPHAS:
        shrink = eigvals / (eigvals + alpha)
        fitted = eigvecs @ (shrink * proj)
        hat_diag = (eigvecs**2) @ shrink + 1.0 / n  # + 1/n: the unpenalised intercept
        loo = (yc - fitted) / np.maximum(1.0 - hat_diag, 1e-9)
        err = float(np.sqrt(np.mean(loo**2)))
        if best is None or err < best[1] - 1e-15:
            best = (alpha, err)
    alpha, err = best  # type: ignore[misc]
    dual = eigvecs @ (proj / (eigvals + alpha))
    return QualityModel(mean_bits, xc.T @ dual, mean_y, alpha, n, err, float(y.std()))


def screened_waves(
    bits: Mapping[str, np.ndarray],
    costs: Mapping[str, float],
    model: QualityModel | None,
    archive: Sequence[tuple[float, float]],
    higher_is_better: bool,
    waves: int = WAVES,
) -> dict[str, int]:
    """Each candidate's wave (`bits`: key -> genome): by promise (fewest dominating points among
    the archive's measured ones and the other candidates' predicted ones; then better predicted
    quality; then key), split into `waves` runs of near-equal size. Without a model, the genome
    hash decides (`race_wave`)."""
    if model is None or not bits:
        return {k: race_wave(k) for k in bits}
    ordered = sorted(bits)
    predicted = dict(zip(ordered, model.predict(np.stack([bits[k] for k in ordered])).tolist()))
    sign = 1.0 if higher_is_better else -1.0

    def dominators(key: str) -> int:
        q, c = predicted[key], costs[key]
        others = [*archive, *((predicted[k], costs[k]) for k in ordered if k != key)]
        return sum(dominated(q, c, [p], higher_is_better) for p in others)

    rank = sorted(ordered, key=lambda k: (dominators(k), -sign * predicted[k], k))
    return {k: i * waves // len(rank) for i, k in enumerate(rank)}
